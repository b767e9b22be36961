"""open_clip models (BiomedCLIP, QuiltNet, PLIP-style and UniMed-CLIP-style CLIPs): the image tower per layer.

Specs: ``open_clip:<arch>/<pretrained>`` (an open_clip architecture and pretrained tag, e.g.
``open_clip:ViT-B-16/laion2b_s34b_b88k``), ``hf-hub:<org>/<name>`` (a repo holding
``open_clip_config.json``) and a local directory in that layout (``open_clip_config.json`` +
``open_clip_model.safetensors``).

Blocks by tower type: open_clip's own ``VisionTransformer`` (its residual blocks), a timm trunk
(``TimmModel``, as in BiomedCLIP: timm's ``feature_info`` levels) or ``ModifiedResNet`` (its four
stages). The last layer is ``encode_image`` (unnormalised; the space zero-shot classification uses).
The text tower stays loaded: :meth:`OpenClipAdapter.encode_text` embeds class prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medprobe.adapters.adapter import Capability
from medprobe.adapters.models.base import local_revision, sha256_of_state
from medprobe.adapters.models.image_encoder import (
    BlockEncoderAdapter,
    BlockLayout,
    TransformPreprocessor,
    describe_transform,
)
from medprobe.adapters.models.timm_encoder import timm_blocks, timm_layout
from medprobe.adapters.weights import (
    PICKLE_HINT,
    hub_file,
    hub_weights,
    is_pickle,
    local_weights,
    weights_revision,
)
from medprobe.errors import InvalidInputError, ModelError, ModelNotFoundError

ADAPTER = "open_clip"
SPEC_PREFIX = "open_clip:"
CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "pytorch_model.bin",
)
LAYER_SEMANTICS = (
    "layer i < n_blocks = output of image-tower block i (open_clip VisionTransformer resblock, timm trunk "
    "feature_info module, or ModifiedResNet stage); layer n_blocks = encode_image (unnormalised image "
    "embedding); cls = class token, image_mean = mean of patch tokens (class and register tokens excluded), "
    "mean = all tokens, spatial_mean = mean over the feature map"
)


def tower_blocks(visual: nn.Module) -> tuple[list[str], list[nn.Module], BlockLayout, list[int]]:
    """Block names, modules, output layout and widths of an open_clip image tower."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        transformer: Any = visual.transformer
        blocks = list(transformer.resblocks)
        layout = BlockLayout(tokens=True, n_prefix=1, has_cls=True, seq_first=not transformer.batch_first)
        names = [f"transformer.resblocks.{i}" for i in range(len(blocks))]
        return names, blocks, layout, [int(transformer.width)] * len(blocks)
    if isinstance(visual, TimmModel):
        trunk: Any = visual.trunk
        names, blocks = timm_blocks(trunk)
        widths = [int(entry["num_chs"]) for entry in trunk.feature_info]
        return [f"trunk.{n}" for n in names], blocks, timm_layout(trunk), widths
    if isinstance(visual, ModifiedResNet):
        stages: list[Any] = [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
        widths = [int(stage[-1].bn3.num_features) for stage in stages]
        return [f"layer{i}" for i in range(1, 5)], stages, BlockLayout(tokens=False), widths
    raise ModelError(
        f"open_clip image tower {type(visual).__name__} has no block list medprobe knows; supported: "
        "VisionTransformer, TimmModel (timm trunks), ModifiedResNet; for another, register a medprobe.models "
        "plugin (see medprobe/extractor/plugins/efficientnet_lite.py)"
    )


def embedding_width(visual: nn.Module) -> int:
    """Width of ``encode_image``'s output."""
    out = getattr(visual, "output_dim", None)
    if isinstance(out, int):
        return out
    head: Any = getattr(visual, "head", None)  # TimmModel: its projection, when it has one
    head_linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if head is not None else []
    if head_linears:
        return int(head_linears[-1].out_features)
    trunk: Any = getattr(visual, "trunk", None)
    if trunk is not None:
        return int(getattr(trunk, "head_hidden_size", None) or trunk.num_features)
    raise InvalidInputError(f"cannot tell the embedding width of open_clip tower {type(visual).__name__}")


class OpenClipAdapter(BlockEncoderAdapter):
    """An open_clip model's image tower per block, ``encode_image`` as the last layer; text tower kept."""

    capabilities = frozenset({Capability.pooled_features, Capability.text_embeddings})

    def __init__(
        self, model: nn.Module, preprocess: Any, tokenizer: Any, *, model_id: str, revision: str, arch: str
    ) -> None:
        visual: Any = model.visual
        names, blocks, layout, widths = tower_blocks(visual)
        preprocessing = {
            "transform": describe_transform(preprocess),
            "preprocess_cfg": dict(getattr(visual, "preprocess_cfg", {}) or {}),
        }
        super().__init__(
            model,
            blocks=blocks,
            layout=layout,
            preprocessor=TransformPreprocessor(preprocess, arch),
            model_id=model_id,
            revision=revision,
            adapter=ADAPTER,
            preprocessing=preprocessing,
            layer_semantics=LAYER_SEMANTICS,
            hidden_sizes=[*widths, embedding_width(visual)],
            extra={"model_class": type(model).__name__, "tower": type(visual).__name__, "arch": arch, "blocks": names},
        )
        self.tokenizer = tokenizer

    def run_blocks(self, pixel_values: torch.Tensor) -> object:
        model: Any = self.model
        return model.visual(pixel_values)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model: Any = self.model
        return model.encode_image(pixel_values)

    def encode_text(self, texts: Sequence[str], *, normalize: bool = False) -> torch.Tensor:
        """Text-tower embeddings of ``texts`` (float32, on the device): the other side of zero-shot."""
        model: Any = self.model
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.no_grad():
            return model.encode_text(tokens, normalize=normalize).float()


# ----------------------------------------------------------------------------- loading
def _create(name: str, pretrained: str | None, *, device: str, dtype: torch.dtype) -> tuple[nn.Module, Any, Any]:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    model = model.to(dtype=dtype).eval()
    return model, preprocess, open_clip.get_tokenizer(name)


def load_open_clip_dir(
    directory: Path, *, model_id: str, device: str, dtype: torch.dtype, allow_pickle: bool
) -> OpenClipAdapter:
    """A local directory with ``open_clip_config.json`` and weights."""
    config = directory / CONFIG_FILE
    if not config.is_file():
        raise ModelNotFoundError(f"open_clip model directory {str(directory)!r} has no {CONFIG_FILE}")
    if "model_cfg" not in json.loads(config.read_text()):
        raise InvalidInputError(f"{config} has no model_cfg: it is not an open_clip config")
    local_weights(directory, WEIGHT_FILES, allow_pickle=allow_pickle, config=CONFIG_FILE)  # present and allowed
    model, preprocess, tokenizer = _create(f"local-dir:{directory}", None, device=device, dtype=dtype)
    return OpenClipAdapter(
        model, preprocess, tokenizer, model_id=model_id, revision=local_revision(directory), arch=model_id
    )


def load_open_clip_hub(repo_id: str, *, device: str, dtype: torch.dtype, allow_pickle: bool) -> OpenClipAdapter:
    """``hf-hub:<org>/<name>`` holding ``open_clip_config.json``."""
    weights = hub_weights(repo_id, WEIGHT_FILES[0], WEIGHT_FILES[3:], allow_pickle=allow_pickle)
    model, preprocess, tokenizer = _create(f"hf-hub:{repo_id}", None, device=device, dtype=dtype)
    spec = f"hf-hub:{repo_id}"
    return OpenClipAdapter(model, preprocess, tokenizer, model_id=spec, revision=weights_revision(weights), arch=spec)


def load_open_clip_name(spec: str, *, device: str, dtype: torch.dtype, allow_pickle: bool) -> OpenClipAdapter:
    """``open_clip:<arch>/<pretrained>``: a built-in architecture with a pretrained tag (or weights file)."""
    import open_clip

    arch, _, pretrained = spec.removeprefix(SPEC_PREFIX).partition("/")
    if arch not in open_clip.list_models():
        raise ModelNotFoundError(
            f"open_clip has no architecture {arch!r}; list them with "
            "`python -c \"import open_clip; print(open_clip.list_pretrained())\"`"
        )
    if not pretrained:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "(none)"
        raise ModelError(f"say which weights: open_clip:{arch}/<pretrained>; tags for {arch}: {tags}")
    weights: Path | None = None
    if Path(pretrained).is_file():
        if Path(pretrained).suffix != ".safetensors" and not allow_pickle:
            raise ModelError(f"{pretrained} is a pickle checkpoint; " + PICKLE_HINT)
        weights = Path(pretrained)
    else:
        cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        if not cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "(none)"
            raise ModelNotFoundError(f"open_clip has no pretrained tag {pretrained!r} for {arch}; choose from {tags}")
        # open_clip's "hf_hub" is "org/repo/" (default file) or "org/repo/<file>"
        hub_id, filename = os.path.split(str(cfg.get("hf_hub") or ""))
        if hub_id and filename:
            if is_pickle(filename) and not allow_pickle:
                raise ModelError(f"open_clip weights {arch}/{pretrained} are in {filename}; " + PICKLE_HINT)
            weights = hub_file(hub_id, filename)
        elif hub_id:
            weights = hub_weights(hub_id, WEIGHT_FILES[0], WEIGHT_FILES[3:], allow_pickle=allow_pickle)
        elif not allow_pickle:
            raise InvalidInputError(f"open_clip weights {arch}/{pretrained} are only a pickle download; " + PICKLE_HINT)
    model, preprocess, tokenizer = _create(arch, pretrained, device=device, dtype=dtype)
    revision = weights_revision(weights) if weights is not None else "sha256:" + sha256_of_state(model)
    return OpenClipAdapter(model, preprocess, tokenizer, model_id=spec, revision=revision, arch=arch)


def hub_is_open_clip(repo_id: str) -> bool:
    """Whether a hub repo holds an open_clip model (it has ``open_clip_config.json``)."""
    return hub_file(repo_id, CONFIG_FILE) is not None
