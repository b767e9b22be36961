"""timm image encoders (UNI, Virchow, Prov-GigaPath, H-optimus, DINOv2 and RETFound-style ViTs, ConvNeXt, ...).

Specs: ``timm/<name>[.<tag>]`` (a timm model name; weights from the hub repo ``timm/<name>``),
``hf-hub:<org>/<name>`` (a repo holding timm's ``config.json`` + ``model.safetensors``) and a local
directory in that same layout (what ``timm.models.save_for_hf`` or a hub download leaves).

Blocks are timm's own ``feature_info`` modules, the levels its ``forward_intermediates`` returns: every
block of a ViT, the four stages of a ConvNeXt, the five resolution levels of an EfficientNet. The last
layer is ``forward_head(forward_features(x), pre_logits=True)``: the pooled, normed feature the model
card's "embedding" is. Preprocessing is ``resolve_model_data_config`` + ``create_transform`` (the
checkpoint's ``pretrained_cfg``: size, crop, interpolation, mean/std).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medprobe.adapters.models.base import local_revision, sha256_of_state
from medprobe.adapters.models.image_encoder import (
    BlockEncoderAdapter,
    BlockLayout,
    TransformPreprocessor,
    describe_transform,
)
from medprobe.adapters.models.timm_recipes import create_kwargs
from medprobe.adapters.weights import PICKLE_HINT, hub_file, hub_weights, local_weights, weights_revision
from medprobe.errors import InvalidInputError, ModelError, ModelNotFoundError

ADAPTER = "timm"
SPEC_PREFIX = "timm/"
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
LAYER_SEMANTICS = (
    "layer i < n_blocks = output of timm feature_info module i (a ViT block's token sequence or a CNN stage's "
    "feature map, as forward_intermediates returns it); layer n_blocks = forward_head(forward_features(x), "
    "pre_logits=True); cls = class token, image_mean = mean of patch tokens (class and register tokens "
    "excluded), mean = all tokens, spatial_mean = mean over the feature map"
)


def is_timm_config(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` is timm's (it names an ``architecture``; transformers' names a ``model_type``)."""
    return "architecture" in config and "model_type" not in config


def timm_blocks(model: nn.Module) -> tuple[list[str], list[nn.Module]]:
    """The names and modules of the model's ``feature_info`` levels (its block list)."""
    info = getattr(model, "feature_info", None)
    names = [str(entry["module"]) for entry in info] if isinstance(info, list) else []
    modules: list[nn.Module] = []
    for name in names:
        try:
            modules.append(model.get_submodule(name))
        except AttributeError:
            modules = []
            break
    if not modules:
        raise ModelError(
            f"timm architecture {type(model).__name__} has no block list medprobe can hook (no usable "
            "feature_info); supported: timm models that define feature_info (VisionTransformer, Eva, ConvNeXt, "
            "EfficientNet, ResNet, ...); for another, register a medprobe.models plugin (see "
            "medprobe/extractor/plugins/efficientnet_lite.py)"
        )
    return names, modules


def timm_layout(model: nn.Module) -> BlockLayout:
    """Token layout for ViT-style models (they count their prefix tokens), feature maps otherwise."""
    n_prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(n_prefix, int):
        has_cls = getattr(model, "cls_token", None) is not None
        return BlockLayout(tokens=True, n_prefix=n_prefix, has_cls=has_cls)
    return BlockLayout(tokens=False, channels_last=str(getattr(model, "output_fmt", "NCHW")) == "NHWC")


def timm_preprocessor(model: nn.Module) -> tuple[TransformPreprocessor, dict[str, Any]]:
    """The model's eval transform and the data config it came from."""
    from timm.data import create_transform, resolve_model_data_config

    data_config = resolve_model_data_config(model)
    transform = create_transform(**data_config, is_training=False)
    return TransformPreprocessor(transform, "a timm model"), {
        "data_config": data_config,
        "transform": describe_transform(transform),
    }


class TimmAdapter(BlockEncoderAdapter):
    """A timm model: hooks on its feature_info modules, the pre-logits feature as the last layer."""

    def __init__(self, model: nn.Module, *, model_id: str, revision: str) -> None:
        names, modules = timm_blocks(model)
        layout = timm_layout(model)
        preprocessor, preprocessing = timm_preprocessor(model)
        timm_model: Any = model
        width = int(getattr(timm_model, "head_hidden_size", None) or timm_model.num_features)  # pre-logits width
        super().__init__(
            model,
            blocks=modules,
            layout=layout,
            preprocessor=preprocessor,
            model_id=model_id,
            revision=revision,
            adapter=ADAPTER,
            preprocessing=preprocessing,
            layer_semantics=LAYER_SEMANTICS,
            hidden_sizes=[*(int(entry["num_chs"]) for entry in timm_model.feature_info), width],
            extra={
                "model_class": type(model).__name__,
                "architecture": str(getattr(model, "pretrained_cfg", {}).get("architecture", "")),
                "blocks": names,
                "n_prefix_tokens": layout.n_prefix,
            },
        )

    def run_blocks(self, pixel_values: torch.Tensor) -> object:
        model: Any = self.model
        return model.forward_features(pixel_values)

    def patch_grid(self, n_tokens: int) -> tuple[int, int]:
        """timm's own patch grid (``patch_embed.grid_size``) when it holds ``n_tokens``, else square."""
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
        if isinstance(grid, (tuple, list)) and len(grid) == 2 and int(grid[0]) * int(grid[1]) == n_tokens:
            return int(grid[0]), int(grid[1])
        return super().patch_grid(n_tokens)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model: Any = self.model
        return model.forward_head(model.forward_features(pixel_values), pre_logits=True)


# ----------------------------------------------------------------------------- loading
def _create(name: str, *, device: str, dtype: torch.dtype, **kwargs: Any) -> nn.Module:
    import timm

    try:
        model = timm.create_model(name, pretrained=True, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ModelNotFoundError(
                f"timm has no model {name!r}; list them with `python -c \"import timm; print(timm.list_models())\"` "
                "or `medprobe models`"
            ) from e
        raise
    return model.to(device=device, dtype=dtype).eval()


def load_timm_dir(
    directory: Path, *, model_id: str, device: str, dtype: torch.dtype, allow_pickle: bool
) -> TimmAdapter:
    """A local directory with timm's ``config.json`` and weights (``model.safetensors``)."""
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ModelNotFoundError(f"timm model directory {str(directory)!r} has no {CONFIG_FILE}")
    local_weights(directory, WEIGHT_FILES, allow_pickle=allow_pickle, config=CONFIG_FILE)  # present and allowed
    model = _create(f"local-dir:{directory}", device=device, dtype=dtype)
    return TimmAdapter(model, model_id=model_id, revision=local_revision(directory))


def load_timm_hub(repo_id: str, *, device: str, dtype: torch.dtype, allow_pickle: bool) -> TimmAdapter:
    """``hf-hub:<org>/<name>``: a hub repo in timm's layout."""
    weights = hub_weights(repo_id, WEIGHT_FILES[0], WEIGHT_FILES[1:], allow_pickle=allow_pickle)
    # a few model cards add create_model arguments their config.json lacks (timm_recipes)
    model = _create(f"hf-hub:{repo_id}", device=device, dtype=dtype, **create_kwargs(repo_id))
    return TimmAdapter(model, model_id=f"hf-hub:{repo_id}", revision=weights_revision(weights))


def load_timm_name(spec: str, *, device: str, dtype: torch.dtype, allow_pickle: bool) -> TimmAdapter:
    """``timm/<name>[.<tag>]``: a model from timm's registry with its pretrained weights."""
    import timm
    from timm.models import get_pretrained_cfg

    name = spec.removeprefix(SPEC_PREFIX)
    arch = name.partition(".")[0]
    if not timm.is_model(arch):
        raise ModelNotFoundError(
            f"timm has no model {arch!r}; list them with `python -c \"import timm; print(timm.list_models())\"`"
        )
    cfg = get_pretrained_cfg(name) or get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    weights = None
    if hub_id:
        weights = hub_weights(str(hub_id), WEIGHT_FILES[0], WEIGHT_FILES[1:], allow_pickle=allow_pickle)
    elif not allow_pickle:
        raise InvalidInputError(f"timm model {name!r} has its weights only as a pickle download (.pth); " + PICKLE_HINT)
    model = _create(name, device=device, dtype=dtype)
    revision = weights_revision(weights) if weights is not None else "sha256:" + sha256_of_state(model)
    return TimmAdapter(model, model_id=spec, revision=revision)


def hub_is_timm(repo_id: str) -> bool:
    """Whether a hub repo holds a timm checkpoint (its ``config.json`` names an architecture)."""
    path = hub_file(repo_id, CONFIG_FILE)
    if path is None:
        return False
    return is_timm_config(json.loads(path.read_text()))
