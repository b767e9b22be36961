"""Offline random-weight timm and open_clip image encoders, built in code, saved in their hub layouts.

``tiny-random/timm-vit`` (a ViT with a class token and 2 register tokens), ``timm-convnext``,
``timm-efficientnet``, ``open_clip-vit`` (open_clip's own ViT tower) and ``open_clip-timm`` (a timm trunk,
as BiomedCLIP has) go through the same adapters as real checkpoints. :meth:`EncoderBuild.save` writes the
directory a hub download leaves (timm: ``config.json`` + ``model.safetensors`` via ``timm.models.save_for_hf``;
open_clip: ``open_clip_config.json`` + ``open_clip_model.safetensors``), which ``load_adapter`` reads back
through the library's own loader. ``random-full/timm-vit-large`` is UNI's ViT-L/16 shape and
``random-full/open_clip-vit-b16`` BiomedCLIP's ViT-B/16 image tower shape, for throughput benchmarks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medprobe.adapters.adapter import Adapter

# a ViT small enough for CI: 32 px images in 8 px patches, 2 blocks of width 32, class + 2 register tokens
TINY_VIT_ARGS: dict[str, Any] = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 4,
    "reg_tokens": 2,
    "num_classes": 5,
}
UNI_VIT_ARGS: dict[str, Any] = {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0}


class EncoderBuild(ABC):
    """A random-weight encoder that can wrap itself in its adapter and save itself in its hub layout."""

    model: nn.Module

    @abstractmethod
    def adapter(self, model_id: str, revision: str) -> Adapter:
        """The adapter a loaded checkpoint of this model gets."""

    @abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write the model as a hub download would leave it; returns ``directory``."""


@dataclass
class TimmBuild(EncoderBuild):
    """A timm model and the ``model_args`` that rebuild its architecture."""

    model: nn.Module
    model_args: dict[str, Any] = field(default_factory=dict)

    def adapter(self, model_id: str, revision: str) -> Adapter:
        from medprobe.adapters.models.timm_encoder import TimmAdapter

        return TimmAdapter(self.model, model_id=model_id, revision=revision)

    def save(self, directory: str | Path) -> Path:
        from timm.models import save_for_hf

        path = Path(directory)
        save_for_hf(self.model, str(path), model_args=self.model_args or None, safe_serialization=True)
        return path


@dataclass
class OpenClipBuild(EncoderBuild):
    """An open_clip model, its eval transform, tokenizer and the ``model_cfg`` that rebuilds it."""

    model: nn.Module
    preprocess: Any
    tokenizer: Any
    model_cfg: dict[str, Any]

    def adapter(self, model_id: str, revision: str) -> Adapter:
        from medprobe.adapters.models.open_clip_encoder import OpenClipAdapter

        return OpenClipAdapter(
            self.model, self.preprocess, self.tokenizer, model_id=model_id, revision=revision, arch=model_id
        )

    def save(self, directory: str | Path) -> Path:
        from open_clip.push_to_hf_hub import save_config_for_hf
        from safetensors.torch import save_file

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.model.state_dict(), str(path / "open_clip_model.safetensors"))
        save_config_for_hf(self.model, path / "open_clip_config.json", model_config=self.model_cfg)
        # the tokenizer is open_clip's default BPE (shipped with the package): nothing to save
        return path


def _timm(
    arch: str, args: dict[str, Any], input_size: tuple[int, int, int] | None, device: str, dtype: Any
) -> TimmBuild:
    import timm

    overlay = {"input_size": input_size} if input_size else None
    with torch.device(device):
        model = timm.create_model(arch, pretrained=False, pretrained_cfg_overlay=overlay, **args)
    # the architecture and its input size travel in config.json (model_args, pretrained_cfg)
    return TimmBuild(model.to(dtype=dtype).eval(), {**args})


def _open_clip(model_cfg: dict[str, Any], device: str, dtype: Any) -> OpenClipBuild:
    import open_clip
    from open_clip.factory import set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2

    with torch.device(device):
        model = open_clip.CLIP(**model_cfg)
    cfg = PreprocessCfg(size=model.visual.image_size)
    set_model_preprocess_cfg(model, cfg.__dict__)
    preprocess = image_transform_v2(cfg, is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    return OpenClipBuild(model.to(dtype=dtype).eval(), preprocess, tokenizer, model_cfg)


_TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}


def build_encoder(name: str, *, full_size: bool, device: str, dtype: Any) -> EncoderBuild:
    """Build the named random encoder (call under a fixed seed)."""
    if name == "timm-vit":
        if full_size:
            return _timm("vit_large_patch16_224", UNI_VIT_ARGS, None, device, dtype)
        return _timm("vit_small_patch16_224", TINY_VIT_ARGS, (3, 32, 32), device, dtype)
    if name == "timm-convnext":
        return _timm("test_convnext", {"num_classes": 5}, (3, 64, 64), device, dtype)
    if name == "timm-efficientnet":
        return _timm("test_efficientnet", {"num_classes": 5}, (3, 64, 64), device, dtype)
    if name == "open_clip-vit":
        if full_size:  # BiomedCLIP's image tower shape: ViT-B/16 at 224 px, 512-d embedding
            vision: dict[str, Any] = {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16}
            text: dict[str, Any] = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}
            return _open_clip({"embed_dim": 512, "vision_cfg": vision, "text_cfg": text}, device, dtype)
        vision = {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 8}
        return _open_clip({"embed_dim": 16, "vision_cfg": vision, "text_cfg": _TINY_TEXT}, device, dtype)
    if name == "open_clip-timm":
        vision = {
            "timm_model_name": "test_vit",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 160,
        }
        return _open_clip({"embed_dim": 16, "vision_cfg": vision, "text_cfg": _TINY_TEXT}, device, dtype)
    raise KeyError(name)


TINY_ENCODERS = ("timm-vit", "timm-convnext", "timm-efficientnet", "open_clip-vit", "open_clip-timm")
FULL_ENCODERS = {
    "timm-vit": "UNI-shaped ViT-L/16 (timm vit_large_patch16_224, init_values=1e-5)",
    "open_clip-vit": "BiomedCLIP-shaped ViT-B/16 image tower (open_clip)",
}
