"""Forward passes: one batch -> every requested (pooling, layer), pooled on the device, copied to host once."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from medprobe.adapters.adapter import Adapter
from medprobe.errors import InvalidInputError, MedprobeError


class OutOfMemory(MedprobeError):
    """A forward pass ran out of memory at the smallest batch size allowed."""


def is_oom(error: BaseException) -> bool:
    """True for CUDA/CPU allocator out-of-memory errors."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class Runner:
    """Runs an adapter's pooled forward pass and returns host float32 arrays per feature set."""

    def __init__(
        self,
        adapter: Adapter,
        layers: Sequence[int],
        poolings: Sequence[str],
        feature_set_ids: Mapping[str, str],
        widths: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """``widths``: per pooling, the row width each layer must have (the feature set's ``hidden_sizes``)."""
        self.adapter = adapter
        self.layers = [int(x) for x in layers]
        self.poolings = list(poolings)
        self.feature_set_ids = dict(feature_set_ids)  # pooling -> feature_set_id
        self.widths = dict(widths or {})
        self.forward_s = 0.0
        self.n_forward = 0  # forward passes run
        self.n_images = 0  # images forwarded

    def forward(self, inputs: Mapping[str, torch.Tensor], n_images: int) -> dict[str, dict[int, np.ndarray]]:
        """``{feature_set_id: {layer: (n, hidden) float32}}`` for one batch; OOM errors propagate."""
        device = self.adapter.device
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.adapter.forward_pooled(inputs, self.layers, self.poolings)
            host = {key: value.detach().to("cpu", dtype=torch.float32, non_blocking=True) for key, value in out.items()}
            if device.type == "cuda":
                torch.cuda.current_stream(device).synchronize()
        del out
        result: dict[str, dict[int, np.ndarray]] = {fs: {} for fs in self.feature_set_ids.values()}
        for (pooling, layer), tensor in host.items():
            if pooling not in self.feature_set_ids or layer not in self.layers:
                continue
            arr = tensor.numpy()
            if arr.shape[0] != n_images:
                raise MedprobeError(
                    f"adapter {self.adapter.identity.adapter} returned {arr.shape[0]} rows for {n_images} images "
                    f"({pooling}, layer {layer}); this is a bug in the adapter"
                )
            expected = self.widths.get(pooling)
            if expected is not None and layer < len(expected) and arr.shape[1] != expected[layer]:
                raise InvalidInputError(
                    f"{pooling}, layer {layer}: rows of width {arr.shape[1]}, the feature set's are {expected[layer]}"
                    + ("; this model sizes its token grid by the image: give the dataset images of one size"
                       if pooling == "tokens" else "")
                )  # fmt: skip
            result[self.feature_set_ids[pooling]][layer] = arr
        missing = [(p, x) for p in self.poolings for x in self.layers if x not in result[self.feature_set_ids[p]]]
        if missing:
            raise MedprobeError(f"adapter {self.adapter.identity.adapter} returned no output for {missing[:4]}")
        self.forward_s += time.perf_counter() - t0
        self.n_forward += 1
        self.n_images += n_images
        return result


def free_device_memory(device: torch.device) -> None:
    """Release cached blocks after an out-of-memory error so a smaller batch can fit."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
