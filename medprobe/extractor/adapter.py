"""The seam between model code and the extraction pipeline.

An adapter wraps one loaded model (a Hugging Face checkpoint, a tiny random-weight
model built in code, or a plugin vision encoder) and knows three things: how to turn
decoded images into model inputs (on CPU, inside DataLoader workers), how to run one
forward pass that returns every requested (pooling, layer) already pooled on the
device, and which fields identify its numbers (the feature-set key).

The pipeline (``medprobe.extractor.pipeline``) only talks to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

POOLINGS = ("last", "image_mean", "mean", "cls", "spatial_mean")


@dataclass(frozen=True)
class ModelIdentity:
    """The fields of a feature set that come from the model (see ``schemas.FeatureSetRow``)."""

    model_id: str
    model_revision: str  # commit hash, or sha256 of the weights
    adapter: str
    preprocessing: str  # canonical JSON of the processor / transform config
    layer_semantics: str
    n_layers: int
    hidden_sizes: tuple[int, ...]
    supported_poolings: tuple[str, ...]
    default_pooling: str
    takes_prompt: bool
    extra: Mapping[str, Any] = field(default_factory=dict)


class Adapter(ABC):
    """One loaded model, ready to extract pooled per-layer activations."""

    identity: ModelIdentity
    device: torch.device

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, torch.Tensor]:
        """Turn a batch of decoded RGB images (and the prompt) into CPU tensors.

        Called as the DataLoader's collate step inside worker processes, so the adapter's
        processor must be picklable and this must not touch the GPU.
        """

    @abstractmethod
    def forward_pooled(
        self, batch: Mapping[str, torch.Tensor], layers: Sequence[int], poolings: Sequence[str]
    ) -> dict[tuple[str, int], torch.Tensor]:
        """One forward pass; returns ``{(pooling, layer): (batch, hidden)}`` pooled on the device.

        ``layers`` are non-negative indices in ``range(identity.n_layers)``.
        """
