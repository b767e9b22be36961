"""Offline random-weight models and their processors, built in code (no hub, no files).

``tiny-random/<name>`` specs build very small models for tests and smoke runs; ``random-full/<name>``
builds full-size configurations (CLIP ViT-B/32 vision tower, an Idefics-9B-shaped VLM) for
benchmarks, where throughput does not depend on the weight values. Both go through exactly the
same adapter classes as real checkpoints, and ``save_pretrained`` of the model and processor
gives a directory that ``load_adapter`` reads like any local checkpoint.

Tokenizers are byte-level BPE models with no merges (every byte is a token) plus the special
tokens each processor needs; image processors are the classes ``AutoImageProcessor`` loads back (the
torchvision backend).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medprobe.errors import NotFoundError

if TYPE_CHECKING:
    from medprobe.adapters.adapter import Adapter


from medprobe.synthetic import towers, vlms
from medprobe.synthetic.building import FULL_PREFIX, SEED, TINY_PREFIX, Built, seeded

TINY_BUILDERS: dict[str, Callable[[bool, str | None, str], Built]] = {
    "clip": towers.clip,
    "siglip": towers.siglip,
    "vit": towers.vit,
    "dinov2": towers.dinov2,
    "dinov2-registers": towers.dinov2_registers,
    "llava": vlms.llava,
    "llava-next": vlms.llava_next,
    "qwen2-vl": vlms.qwen2_vl,
    "qwen2.5-vl": vlms.qwen2_5_vl,
    "paligemma": vlms.paligemma,
    "idefics": vlms.idefics,
    "idefics2": vlms.idefics2,
    "idefics3": vlms.idefics3,
    "smolvlm": vlms.smolvlm,
    "gemma3": vlms.gemma3,
    "mllama": vlms.mllama,
    "llava-onevision": vlms.llava_onevision,
    "internvl": vlms.internvl,
}
FULL_SIZE = {
    "clip": "CLIP ViT-B/32 vision tower",
    "siglip": "SigLIP-B/16 vision tower",
    "vit": "ViT-B/16 (Phikon's shape)",
    "dinov2": "DINOv2 ViT-B/14 at 518 px (RAD-DINO's shape)",
    "idefics": "Idefics-9B",
}


def random_from_config(name: str, *, full_size: bool = False, device: str | None = None, dtype: str = "fp32") -> Built:
    """Build the random-weight model ``name`` (seeded) and its processor, without touching any file.

    ``full_size`` builds the real architecture's dimensions (``clip``: ViT-B/32, ``siglip``: B/16,
    ``idefics``: Idefics-9B); pass ``device="meta"`` to check construction without memory, or a CUDA
    device to build a benchmark model directly on the GPU in ``dtype``.
    """
    table = FULL_SIZE if full_size else TINY_BUILDERS
    if name not in table:
        kind = "full-size" if full_size else "tiny"
        raise NotFoundError(f"no {kind} random model {name!r}; choose from {', '.join(sorted(table))}")
    builder = TINY_BUILDERS[name]
    return seeded(lambda: builder(full_size, device, dtype))


def random_encoder(name: str, *, full_size: bool = False, device: str | None = None, dtype: str = "fp32") -> Any:
    """Build the random timm / open_clip encoder ``name`` (seeded): an ``encoders.EncoderBuild``."""
    from medprobe.adapters.loading import torch_dtype
    from medprobe.synthetic.encoders import FULL_ENCODERS, TINY_ENCODERS, build_encoder

    table = FULL_ENCODERS if full_size else TINY_ENCODERS
    if name not in table:
        kind = "full-size" if full_size else "tiny"
        raise NotFoundError(f"no {kind} random encoder {name!r}; choose from {', '.join(sorted(table))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build_encoder(name, full_size=full_size, device=device or "cpu", dtype=torch_dtype(dtype))


# image-text models for zero-shot: saved with both processor halves (image processor and tokenizer)
CONTRASTIVE = ("clip-contrastive", "siglip-contrastive")


def random_contrastive(name: str, *, device: str | None = None, dtype: str = "fp32") -> Built:
    """Build ``clip-contrastive`` or ``siglip-contrastive`` (seeded): processor = (image processor, tokenizer)."""
    if name not in CONTRASTIVE:
        raise NotFoundError(f"no random image-text model {name!r}; choose from {', '.join(CONTRASTIVE)}")
    return seeded(lambda: towers.contrastive(name.split("-")[0], device, dtype))


def spec_names() -> list[str]:
    """Every model spec this module can build (``tiny-random/*`` and ``random-full/*``)."""
    from medprobe.synthetic.encoders import FULL_ENCODERS, TINY_ENCODERS

    tiny = [*TINY_BUILDERS, *TINY_ENCODERS, *CONTRASTIVE]
    full = [*FULL_SIZE, *FULL_ENCODERS]
    return [TINY_PREFIX + n for n in tiny] + [FULL_PREFIX + n for n in full]


def _split_spec(spec: str) -> tuple[str, bool]:
    full = spec.startswith(FULL_PREFIX)
    return spec.removeprefix(FULL_PREFIX if full else TINY_PREFIX), full


def _is_encoder(name: str) -> bool:
    from medprobe.synthetic.encoders import FULL_ENCODERS, TINY_ENCODERS

    return name in TINY_ENCODERS or name in FULL_ENCODERS


def load_random(spec: str, *, device: str = "cpu", dtype: str = "fp32") -> Adapter:
    """Load ``tiny-random/<name>`` or ``random-full/<name>`` through the same adapter code as a real checkpoint.

    Registered under the ``medprobe.model_families`` entry-point group, so ``load_adapter`` finds it by prefix.
    """
    from medprobe.adapters.loading import adapter_from_model
    from medprobe.adapters.models.base import sha256_of_state

    name, full = _split_spec(spec)
    # a full-size model is too large to hash: its revision names the recipe instead
    recipe = f"random-init:{name}:seed={SEED}:torch={torch.__version__}" if full else None
    if _is_encoder(name):
        encoder = random_encoder(name, full_size=full, device=device, dtype=dtype)
        return encoder.adapter(spec, recipe or "sha256:" + sha256_of_state(encoder.model))
    if name in CONTRASTIVE and not full:  # the image side; zero-shot loads the saved directory (text tower too)
        from medprobe.adapters.contrastive import HFContrastiveAdapter

        pair = random_contrastive(name, device=device, dtype=dtype)
        image_processor: Any = pair.processor[0]  # type: ignore[index]
        return HFContrastiveAdapter(pair.model, image_processor, family=name.split("-")[0], model_id=spec,
                                    revision="sha256:" + sha256_of_state(pair.model))  # fmt: skip
    built = random_from_config(name, full_size=full, device=device, dtype=dtype)
    return adapter_from_model(built.model, built.processor, model_id=spec, revision=recipe)


def save_random(spec: str, directory: str | Path) -> Path:
    """Write the random model ``spec`` to ``directory`` in its hub layout (what a download leaves).

    Transformers models: ``save_pretrained`` of model and processor; timm: ``config.json`` +
    ``model.safetensors``; open_clip: ``open_clip_config.json`` + ``open_clip_model.safetensors``.
    """
    name, full = _split_spec(spec)
    path = Path(directory)
    if _is_encoder(name):
        return random_encoder(name, full_size=full).save(path)
    built = random_contrastive(name) if name in CONTRASTIVE else random_from_config(name, full_size=full)
    model: Any = built.model
    model.save_pretrained(path)
    parts: Any = built.processor if isinstance(built.processor, tuple) else (built.processor,)
    for part in parts:
        part.save_pretrained(path)
    return path
