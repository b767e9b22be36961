"""Decode and preprocess a batch on the model's device: torchvision's JPEG decoder (nvJPEG on CUDA, batched) and the
model's own resize, crop and normalisation run there, so CPU cores only read files.

The loader's workers read each file, check its hash and parse only its header (PIL, lazily): a baseline 8-bit
grayscale or RGB JPEG without an EXIF rotation travels as its encoded bytes; every other image (PNG, DICOM, 16-bit,
CMYK, rotated) is decoded on the CPU exactly as the PIL path does and travels as a uint8 tensor. On the device the
encoded ones are decoded in one batched call; a batch the decoder rejects is decoded image by image, and an image it
cannot decode goes through the CPU decoder, so a corrupt file fails with the same reason as on the PIL path.

Preprocessing on the device is the model's own, applied to uint8 CHW tensors:

* transformers image processors with the torchvision backend (CLIP, SigLIP, ViT, DINOv2 towers): called with
  ``device=``; they group images by size and resize each group in one call;
* timm and open_clip eval transforms (a torchvision ``Compose`` of resize, centre crop, to-tensor and normalise),
  rebuilt for tensors and applied per group of equal-sized images.

Anything else (the VLM processors, the EfficientNet plugin, unknown transform steps) has no device path and keeps the
PIL path. Resizing a uint8 tensor with antialiasing is torchvision's PIL-matching path, so on the CPU the pixels equal
the PIL path's within the resize's rounding.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

# uint8 CHW RGB images on the device -> the model's inputs ({"pixel_values": (B, 3, H, W)})
DevicePreprocess = Callable[[list[torch.Tensor]], dict[str, torch.Tensor]]
JPEG_MAGIC = b"\xff\xd8\xff"
EXIF_ORIENTATION = 0x0112


def torchvision_available() -> bool:
    """Whether torchvision's image decoders import beside this torch."""
    try:
        import torchvision.io  # noqa: F401
    except Exception:  # an ABI mismatch raises RuntimeError/OSError, not only ImportError
        return False
    return True


def travels_encoded(image: Any) -> bool:
    """Whether a lazily opened PIL image can be decoded on the device as it is: a baseline 8-bit L or RGB JPEG
    with no EXIF rotation (the PIL path applies EXIF orientation; the device decoder is given none)."""
    if getattr(image, "format", None) != "JPEG" or image.mode not in ("L", "RGB"):
        return False
    if image.info.get("progressive") or image.info.get("progression"):
        return False  # nvJPEG's batched decoder handles baseline JPEG; progressive ones decode on the CPU
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # unreadable EXIF: the PIL path reports it
        return False
    return orientation in (None, 1)


def pil_to_chw(image: Any) -> torch.Tensor:
    """A decoded 8-bit L or RGB PIL image as a uint8 (3, H, W) RGB tensor."""
    arr = np.array(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)  # a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def encoded_tensor(data: bytes) -> torch.Tensor:
    """Encoded bytes as the 1-D uint8 tensor torchvision's decoders take."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@dataclass
class DecodeResult:
    """One batch after the device stage: the images that decoded, in order, and the positions that did not."""

    images: list[torch.Tensor]  # uint8 (3, H, W) on the device
    kept: list[int]  # positions in the batch of ``images``
    failed: dict[int, tuple[str, str]]  # position -> (reason, message)


def decode_batch(
    items: Sequence[torch.Tensor],
    encoded: Sequence[bool],
    sources: Sequence[str],
    device: torch.device,
    cpu_decode: Callable[[bytes, str], torch.Tensor],
) -> DecodeResult:
    """Decode the encoded items of a batch on ``device`` (one batched call; image by image if it fails) and move the
    already decoded ones there. ``cpu_decode(bytes, source)`` is the fallback for an image the device decoder
    rejects; it raises :class:`~medprobe.imaging.ImageReadError` for an undecodable file."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from medprobe.imaging import ImageReadError

    out: dict[int, torch.Tensor] = {}
    failed: dict[int, tuple[str, str]] = {}
    enc = [i for i, e in enumerate(encoded) if e]
    for i, e in enumerate(encoded):
        if not e:
            out[i] = items[i].to(device, non_blocking=True)
    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec on every call; its decoders still work
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            if enc:
                decoded = decode_jpeg([items[i] for i in enc], mode=ImageReadMode.RGB, device=device)
                out.update(zip(enc, decoded, strict=True))
        except RuntimeError:  # one bad file fails the batched call: find it
            for i in enc:
                try:
                    out[i] = decode_jpeg(items[i], mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    try:
                        out[i] = cpu_decode(items[i].numpy().tobytes(), sources[i]).to(device)
                    except ImageReadError as err:
                        failed[i] = (err.reason, str(err))
    kept = sorted(out)
    return DecodeResult([out[i] for i in kept], kept, failed)


def hf_device_preprocess(image_processor: Any, device: torch.device) -> DevicePreprocess | None:
    """A transformers image processor run on ``device``; None unless it has the torchvision backend."""
    if getattr(image_processor, "backend", None) != "torchvision":
        return None

    def run(images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = image_processor(images=images, return_tensors="pt", device=device)
        return {"pixel_values": out["pixel_values"]}

    return run


def _tensor_step(step: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """One eval-transform step for batched uint8/float tensors, or None when the step is unknown."""
    from torchvision import transforms as T
    from torchvision.transforms import functional as F

    name = type(step).__name__
    if isinstance(step, T.Resize):
        size, interpolation, max_size = step.size, step.interpolation, step.max_size
        return lambda x: F.resize(x, size, interpolation=interpolation, max_size=max_size, antialias=True)
    if isinstance(step, T.CenterCrop):
        crop = step.size
        return lambda x: F.center_crop(x, list(crop))
    if isinstance(step, T.Normalize):
        mean, std = list(step.mean), list(step.std)
        return lambda x: F.normalize(x, mean, std)
    if name in ("ToTensor", "MaybeToTensor", "PILToTensor") or isinstance(step, T.ToTensor):
        scale = name != "PILToTensor"
        return lambda x: x.float().div(255.0) if scale and x.dtype == torch.uint8 else x
    if name == "MaybeConvertMode" and getattr(step, "mode", "RGB") == "RGB":
        return lambda x: x  # the images are RGB already
    if callable(step) and getattr(step, "__name__", "") in ("_convert_to_rgb", "convert_to_rgb"):
        return lambda x: x
    return None


def compose_device_preprocess(transform: Any, device: torch.device) -> DevicePreprocess | None:
    """A torchvision ``Compose`` eval transform (timm, open_clip) for uint8 tensors on ``device``; None when a step
    has no tensor equivalent. Images of one size are transformed together."""
    steps = getattr(transform, "transforms", None)
    if steps is None:
        return None
    fns = [_tensor_step(s) for s in steps]
    if any(f is None for f in fns):
        return None
    chain = [f for f in fns if f is not None]

    def run(images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(images)
        for idx in groups.values():
            x = torch.stack([images[i] for i in idx]).to(device)
            for fn in chain:
                x = fn(x)
            for j, i in enumerate(idx):
                out[i] = x[j]
        return {"pixel_values": torch.stack([t for t in out if t is not None])}

    return run


def synchronize(device: torch.device) -> None:
    """Wait for the device so stage timings measure the work, not the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its seconds on ``device`` (synchronised)."""
    t0 = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - t0
