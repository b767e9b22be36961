"""Transformers ViT-style vision encoders (CLIP and SigLIP towers, ViT, DINOv2 with or without registers).

Layer ``i`` is the output of encoder block ``i`` (the residual stream, before the final
``post_layernorm`` / ``layernorm``); it equals ``output_hidden_states[i + 1]`` for every ``i``.
Prefix tokens: CLIP, ViT and DINOv2 put a CLS token first; DINOv2 with registers adds its register
tokens after it; SigLIP has none. ``image_mean`` averages the patch tokens only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from medprobe.adapters.adapter import Adapter, ModelIdentity, Preprocessor
from medprobe.adapters.device_decode import DevicePreprocess, hf_device_preprocess
from medprobe.adapters.models.base import compute_dtype, move_batch
from medprobe.adapters.models.capture import PooledCapture
from medprobe.adapters.models.registry import register_family
from medprobe.adapters.models.tokens import TOKENS, TokenGrid, flatten, square_grid
from medprobe.errors import InvalidInputError
from medprobe.featurestore import config_json

LAYER_SEMANTICS = (
    "layer i = output of vision encoder block i (residual stream before post_layernorm) = "
    "output_hidden_states[i+1]; cls = the CLS token, image_mean = mean over patch tokens, "
    "mean = mean over all tokens"
)
# the same definition, worded for every family (the CLIP/SigLIP wording stays: it is part of their feature-set ids)
LAYER_SEMANTICS_ENCODERS = (
    "layer i = output of vision encoder block i (residual stream before the final layernorm) = "
    "output_hidden_states[i+1]; cls = the CLS token, image_mean = mean over patch tokens (CLS and register "
    "tokens excluded), mean = mean over all tokens"
)


def prefix_tokens(family: str, config: Any) -> int:
    """How many non-patch tokens come first: CLS (CLIP, ViT, DINOv2) plus DINOv2's register tokens."""
    if family == "siglip":
        return 0
    return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


def to_rgb(images: Sequence[Image.Image]) -> list[Image.Image]:
    """Every image as 8-bit RGB (grayscale and 16-bit radiographs are converted)."""
    out = []
    for image in images:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = image.point(lambda v: v / 256).convert("L")
        out.append(image if image.mode == "RGB" else image.convert("RGB"))
    return out


class ImageOnlyPreprocessor(Preprocessor):
    """Runs a Hugging Face image processor; vision towers take no prompt."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, images: Sequence[Image.Image], prompt: str | None = None) -> dict[str, torch.Tensor]:
        if prompt is not None:
            raise InvalidInputError("a vision encoder takes no prompt: pass prompt=None")
        out = self.image_processor(images=to_rgb(images), return_tensors="pt")
        return {"pixel_values": out["pixel_values"]}


def find_encoder_layers(model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The vision encoder's block list: the ``ModuleList`` named ``layers`` (or ``layer``) with ``n_layers`` blocks."""
    for name, module in model.named_modules():
        is_blocks = name.rsplit(".", 1)[-1] in ("layers", "layer")
        if isinstance(module, nn.ModuleList) and is_blocks and len(module) == n_layers:
            return module
    raise InvalidInputError(f"cannot find the encoder layers of {type(model).__name__}")


class VisionTowerAdapter(Adapter):
    """A ViT-style image encoder (CLIP/SigLIP vision models, ViTModel, Dinov2Model) with hooks on its blocks."""

    def __init__(self, model: nn.Module, image_processor: Any, *, family: str, model_id: str, revision: str) -> None:
        self.model = model.eval()
        self.family = family
        config: Any = model.config
        n_layers = int(config.num_hidden_layers)
        self.layer_modules = find_encoder_layers(model, n_layers)
        self.n_prefix = prefix_tokens(family, config)
        self.preprocessor = ImageOnlyPreprocessor(image_processor)
        self.device = next(model.parameters()).device
        self.dtype = compute_dtype(model)
        poolings = ("cls", "image_mean", "mean") if self.n_prefix else ("image_mean", "mean")
        self.identity = ModelIdentity(
            model_id=model_id,
            model_revision=revision,
            adapter=family,
            preprocessing=config_json(
                {"image_processor": image_processor.to_dict(), "image_processor_class": type(image_processor).__name__}
            ),
            layer_semantics=LAYER_SEMANTICS if family in ("clip", "siglip") else LAYER_SEMANTICS_ENCODERS,
            n_layers=n_layers,
            hidden_sizes=(int(config.hidden_size),) * n_layers,
            supported_poolings=poolings,
            default_pooling=poolings[0],
            takes_prompt=False,
            extra={"model_class": type(model).__name__},
        )

    token_refusal = None

    def _pool(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        if name == TOKENS:
            return flatten(hidden)
        if name == "cls":
            return hidden[:, 0].float()
        if name == "image_mean":
            return hidden[:, self.n_prefix :].float().mean(dim=1)
        return hidden.float().mean(dim=1)

    def device_preprocess(self) -> DevicePreprocess | None:
        """The image processor on the model's device (transformers' torchvision backend only)."""
        if not isinstance(self.preprocessor, ImageOnlyPreprocessor):
            return None
        return hf_device_preprocess(self.preprocessor.image_processor, self.device)

    def forward_pooled(
        self, batch: Mapping[str, torch.Tensor], layers: Sequence[int], poolings: Sequence[str]
    ) -> dict[tuple[str, int], torch.Tensor]:
        self.check_request(layers, poolings)
        inputs = move_batch({"pixel_values": batch["pixel_values"]}, self.device, self.dtype)
        capture = PooledCapture(self.layer_modules, layers, poolings, self._pool)
        with torch.no_grad():
            return capture.run(lambda: self.model(**inputs))

    def token_grids(self, batch: Mapping[str, torch.Tensor]) -> dict[int, TokenGrid]:
        """Every block's patch grid (image size over patch size when the config says it, else square)."""
        config: Any = self.model.config
        grids: dict[int, TokenGrid] = {}

        def observe(layer: int, hidden: torch.Tensor) -> None:
            n = int(hidden.shape[1]) - self.n_prefix
            rows, cols = _config_grid(config, batch["pixel_values"].shape[-2:]) or square_grid(n, config.model_type)
            if rows * cols != n:
                rows, cols = square_grid(n, config.model_type)
            grids[layer] = TokenGrid(self.n_prefix, rows, cols, int(hidden.shape[2]), "image_mean")

        inputs = move_batch({"pixel_values": batch["pixel_values"]}, self.device, self.dtype)
        capture = PooledCapture(self.layer_modules, range(len(self.layer_modules)), ["mean"],
                                lambda name, h: h.new_zeros(1), observe=observe)  # fmt: skip
        with torch.no_grad():
            capture.run(lambda: self.model(**inputs))
        return grids

    def hidden_states(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Reference path (tests, the baseline benchmark): every layer via ``output_hidden_states``."""
        inputs = move_batch({"pixel_values": batch["pixel_values"]}, self.device, self.dtype)
        with torch.no_grad():
            return self.model(**inputs, output_hidden_states=True).hidden_states


def _config_grid(config: Any, size: Sequence[int]) -> tuple[int, int] | None:
    """The patch grid of an image of ``size`` (height, width) under the config's patch size, if it says one."""
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, (list, tuple)):
        patch = patch[0]
    if not isinstance(patch, int) or patch <= 0:
        return None
    return int(size[0]) // patch, int(size[1]) // patch


# the vision towers: one adapter, told which family it wraps (their feature-set ids name the family)
for _types, _name, _model_class in (
    (("clip", "clip_vision_model"), "clip", "CLIPVisionModel"),
    (("siglip", "siglip_vision_model"), "siglip", "SiglipVisionModel"),
    (("vit",), "vit", "ViTModel"),  # Phikon
    (("dinov2",), "dinov2", "Dinov2Model"),  # RAD-DINO, DINOv2
    (("dinov2_with_registers",), "dinov2-registers", "Dinov2WithRegistersModel"),
):
    register_family(*_types, name=_name, model_class=_model_class, processor="image", names_family=True)(
        VisionTowerAdapter
    )
