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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import torch
from PIL import Image

POOLINGS = ("last", "image_mean", "mean", "cls", "spatial_mean")


class Preprocessor(ABC):
    """Picklable CPU half of an adapter: decoded images (+ prompt) -> model input tensors.

    Holds only the processor / transform (never the model), so a DataLoader can ship it to
    worker processes under any start method: ``collate_fn=functools.partial(adapter.preprocessor,
    prompt=prompt)`` with the images of one batch as the first argument.
    """

    @abstractmethod
    def __call__(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, torch.Tensor]:
        """Turn a batch of decoded images (any PIL mode; converted to RGB here) into CPU tensors."""

    def format_prompt(self, prompt: str | None) -> str | None:
        """The exact text given to the processor for ``prompt`` (chat template applied); None without text."""
        return None


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


class Capability(StrEnum):
    """What a loaded model can do; workflows ask for a capability, never for a family's name."""

    pooled_features = "pooled_features"  # per-layer pooled hidden states of images (extract, search)
    text_embeddings = "text_embeddings"  # a text tower in the image embedding space (zeroshot)
    option_scoring = "option_scoring"  # answers in text: option log-likelihoods, letters, generations (vqa)


class Adapter(ABC):
    """One loaded model, ready to extract pooled per-layer activations."""

    #: what this model can do (:class:`Capability`)
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.pooled_features})
    #: with ``option_scoring``: whether option scoring may run the prompt (with its image) once and score every
    #: option from its key-value cache (no for families whose text must see the image at every step)
    reuses_prompt_cache: ClassVar[bool] = False
    #: with ``option_scoring``: the token type of answer text after the prompt (PaliGemma marks its suffix 1)
    answer_token_type: ClassVar[int] = 0
    #: with ``option_scoring``: takes several images in one prompt (multi-image items, exemplars with images)
    several_images: ClassVar[bool] = False
    identity: ModelIdentity
    device: torch.device
    preprocessor: Preprocessor
    #: why ``extract --tokens`` refuses this model (None: it has token grids, see :meth:`token_grids`)
    token_refusal: ClassVar[str | None] = "it has no token grid (only pooled outputs)"
    #: ``--batch-size auto``'s start on a CPU (None: the pipeline's default). Convolutional nets run fastest on
    #: CPUs at small batches, whose activations stay in cache.
    cpu_batch_size: int | None = None

    def token_grids(self, batch: Mapping[str, torch.Tensor]) -> dict[int, Any]:
        """``{layer: TokenGrid}`` of every layer that has a token grid, read off one forward pass of ``batch`` (one
        image): what ``extract --tokens`` stores (``medprobe.adapters.models.tokens``)."""
        from medprobe.errors import InvalidInputError

        raise InvalidInputError(f"--tokens: {self.identity.model_id} ({self.identity.adapter}) cannot store token "
                                f"grids: {self.token_refusal}")  # fmt: skip

    def supports(self, capability: Capability) -> bool:
        """Whether this model can do ``capability``."""
        return capability in self.capabilities

    def preprocess(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, torch.Tensor]:
        """Turn a batch of decoded RGB images (and the prompt) into CPU tensors.

        Called as the DataLoader's collate step inside worker processes, so the adapter's
        processor must be picklable and this must not touch the GPU. Prefer passing
        ``self.preprocessor`` (which does not hold the model) to the DataLoader.
        """
        return self.preprocessor(images, prompt)

    def device_preprocess(self) -> Callable[[list[torch.Tensor]], dict[str, torch.Tensor]] | None:
        """The same preprocessing for uint8 (3, H, W) RGB tensors already on ``device`` (decoded there), or None
        when the model has none (its batches keep the PIL path in the loader's workers)."""
        return None

    @abstractmethod
    def forward_pooled(
        self, batch: Mapping[str, torch.Tensor], layers: Sequence[int], poolings: Sequence[str]
    ) -> dict[tuple[str, int], torch.Tensor]:
        """One forward pass; returns ``{(pooling, layer): (batch, hidden)}`` pooled on the device.

        ``layers`` are non-negative indices in ``range(identity.n_layers)`` (see
        ``medprobe.layerspec.parse_layers``). Tensors of ``batch`` may be on the CPU
        (pinned) or already on ``device``; the result stays on ``device`` as float32.
        """

    def check_request(self, layers: Sequence[int], poolings: Sequence[str]) -> None:
        """Raise ``InvalidInputError`` unless every layer and pooling can be served by this model."""
        from medprobe.errors import InvalidInputError

        ident = self.identity
        bad_layers = [i for i in layers if not 0 <= int(i) < ident.n_layers]
        if bad_layers:
            raise InvalidInputError(
                f"layer(s) {bad_layers} out of range for {ident.model_id}: it has {ident.n_layers} layers "
                f"(0..{ident.n_layers - 1}); resolve specs with medprobe.layerspec.parse_layers"
            )
        # tokens (every token of a grid) is served by the models whose token_refusal is None
        bad = [p for p in poolings if p not in ident.supported_poolings and not (p == "tokens" and
                                                                                 self.token_refusal is None)]
        if bad:
            raise InvalidInputError(
                f"pooling(s) {bad} not supported by adapter {ident.adapter!r} ({ident.model_id}); "
                f"choose from {', '.join(ident.supported_poolings)}"
            )
        if not layers or not poolings:
            raise InvalidInputError("ask for at least one layer and one pooling")
