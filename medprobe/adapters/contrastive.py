"""Image-text (CLIP-family) models for zero-shot classification: the image tower as an adapter, the text tower beside.

Which models have a text tower: transformers ``CLIPModel`` and ``SiglipModel`` checkpoints (``model_type`` clip or
siglip: openai/clip-*, google/siglip-*, MedSigLIP...) and every open_clip model (``open_clip:``/``hf-hub:`` specs,
BiomedCLIP, UniMed-CLIP...). Vision-only encoders (timm, DINOv2, ViT, the EfficientNet plugin) and the VLMs have
none.

The image side is an ordinary adapter whose last layer is the model's own image embedding (transformers:
``get_image_features``; open_clip: ``encode_image``), so zero-shot reuses a feature set like any other. The text
side embeds prompts exactly as the library does (SigLIP: padded to its maximum length, as it was trained), and the
embeddings are kept in the ``text_embeddings`` table keyed by the text tower's identity and the prompt text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medprobe.adapters.adapter import Adapter, Capability
from medprobe.adapters.models.image_encoder import BlockEncoderAdapter, BlockLayout
from medprobe.adapters.models.vision_tower import (
    LAYER_SEMANTICS_ENCODERS,
    ImageOnlyPreprocessor,
    find_encoder_layers,
    prefix_tokens,
)
from medprobe.errors import InvalidInputError
from medprobe.featurestore import stable_hash
from medprobe.schemas.tables import TextEmbeddingRow

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

CONTRASTIVE_TYPES = {"clip": "CLIPModel", "siglip": "SiglipModel"}
NO_TEXT_TOWER = (
    "zero-shot needs a model with a text tower: a transformers CLIP or SigLIP checkpoint (model_type clip / siglip) "
    "or an open_clip model (open_clip:<arch>/<tag>, hf-hub:<repo> such as BiomedCLIP); {spec} is {what}. Use "
    "`medprobe train --method probe|knn` on its features instead"
)


@dataclass
class TextTower:
    """A model's text side: prompt embeddings and the logit scale (and SigLIP bias) it compares them with."""

    key: str  # stable id of the text tower (model, revision, tokenisation)
    model_id: str
    encode: Callable[[Sequence[str]], np.ndarray]  # (prompts, dim) float32, unnormalised
    logit_scale: float  # exp(logit_scale) as the model defines it
    logit_bias: float | None  # SigLIP's sigmoid bias; None for softmax (CLIP) models

    @property
    def rule(self) -> str:
        """softmax (CLIP) or sigmoid (SigLIP)."""
        return "softmax" if self.logit_bias is None else "sigmoid"


class HFContrastiveAdapter(BlockEncoderAdapter):
    """A transformers CLIPModel / SiglipModel image tower: its blocks, then ``get_image_features`` as the last layer."""

    capabilities = frozenset({Capability.pooled_features, Capability.text_embeddings})

    def __init__(self, model: nn.Module, image_processor: Any, *, family: str, model_id: str, revision: str) -> None:
        vision: Any = model.vision_model
        config: Any = model.config
        vcfg = config.vision_config
        n_prefix = prefix_tokens(family, vcfg)
        blocks = find_encoder_layers(vision, int(vcfg.num_hidden_layers))
        layout = BlockLayout(tokens=True, n_prefix=n_prefix, has_cls=n_prefix > 0)
        embed_dim = int(getattr(config, "projection_dim", 0) or vcfg.hidden_size)
        super().__init__(
            model,
            blocks=list(blocks),
            layout=layout,
            preprocessor=ImageOnlyPreprocessor(image_processor),
            model_id=model_id,
            revision=revision,
            adapter=f"{family}-contrastive",
            preprocessing={
                "image_processor": image_processor.to_dict(),
                "image_processor_class": type(image_processor).__name__,
            },
            layer_semantics=LAYER_SEMANTICS_ENCODERS + "; the last layer = get_image_features (the projected image "
            "embedding zero-shot classification compares with text)",
            hidden_sizes=[int(vcfg.hidden_size)] * len(blocks) + [embed_dim],
            extra={"model_class": type(model).__name__},
        )

    def run_blocks(self, pixel_values: torch.Tensor) -> object:
        model: Any = self.model
        return model.vision_model(pixel_values=pixel_values)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model: Any = self.model
        out = model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def _hf_text(model: Any, tokenizer: Any, family: str, device: torch.device) -> Callable[[Sequence[str]], np.ndarray]:
    max_length = int(model.config.text_config.max_position_embeddings)

    def encode(texts: Sequence[str]) -> np.ndarray:
        if family == "siglip":  # SigLIP was trained on text padded to its full length; pooling reads the last token
            tokens = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True,
                               return_tensors="pt")  # fmt: skip
        else:
            tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        if family == "siglip":
            tokens.pop("attention_mask", None)  # as SiglipModel's own examples: every position attends
        with torch.no_grad():
            out = model.get_text_features(**tokens)
        emb = out if isinstance(out, torch.Tensor) else out.pooler_output
        return emb.float().cpu().numpy()

    return encode


def _load_hf_contrastive(spec: str, *, device: str, dtype: str, allow_pickle: bool) -> tuple[Adapter, TextTower]:
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    from medprobe.adapters.loading import _hub_repo, torch_dtype
    from medprobe.adapters.models.base import model_revision

    repo = _hub_repo(spec)
    config = AutoConfig.from_pretrained(repo)
    family = str(getattr(config, "model_type", ""))
    if family not in CONTRASTIVE_TYPES:
        raise InvalidInputError(NO_TEXT_TOWER.format(spec=spec, what=f"a {family or 'unknown'} model"))
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    model = getattr(transformers, CONTRASTIVE_TYPES[family]).from_pretrained(repo, **kwargs).to(device).eval()
    image_processor = AutoImageProcessor.from_pretrained(repo)
    tokenizer = AutoTokenizer.from_pretrained(repo)
    source = Path(repo).expanduser() if Path(repo).expanduser().is_dir() else None
    revision = model_revision(model, source)
    adapter = HFContrastiveAdapter(model, image_processor, family=family, model_id=spec, revision=revision)
    bias = getattr(model, "logit_bias", None)
    key = stable_hash({"model_id": spec, "revision": revision, "tokenizer": type(tokenizer).__name__,
                       "padding": "max_length" if family == "siglip" else "longest", "dtype": dtype})  # fmt: skip
    tower = TextTower(
        key=key,
        model_id=spec,
        encode=_hf_text(model, tokenizer, family, adapter.device),
        logit_scale=float(model.logit_scale.detach().float().exp().item()),
        logit_bias=None if bias is None else float(bias.detach().float().item()),
    )
    return adapter, tower


def load_contrastive(
    spec: str, *, device: str = "cpu", dtype: str = "fp32", allow_pickle: bool = False
) -> tuple[Adapter, TextTower]:
    """The image adapter and text tower of the CLIP-family model ``spec``; InvalidInputError for other models."""
    from medprobe.adapters.loading import load_adapter, parse_model_spec

    parsed = parse_model_spec(spec)
    backend = parsed.backend
    if backend == "open_clip":
        adapter: Any = load_adapter(parsed, device=device, dtype=dtype, allow_pickle=allow_pickle)
        if not adapter.supports(Capability.text_embeddings):
            raise InvalidInputError(NO_TEXT_TOWER.format(spec=spec, what="an open_clip model without a text tower"))
        model: Any = adapter.model
        bias = getattr(model, "logit_bias", None)
        tower = TextTower(
            key=stable_hash(
                {"model_id": spec, "revision": adapter.identity.model_revision, "dtype": dtype,
                 "tokenizer": type(adapter.tokenizer).__name__}
            ),
            model_id=spec,
            encode=lambda texts: adapter.encode_text(texts).cpu().numpy(),
            logit_scale=float(model.logit_scale.detach().float().exp().item()),
            logit_bias=None if bias is None else float(bias.detach().float().item()),
        )
        return adapter, tower
    if backend == "transformers":
        return _load_hf_contrastive(spec, device=device, dtype=dtype, allow_pickle=allow_pickle)
    what = {"timm": "a timm image encoder", "plugin": "an image-only plugin", "family": "a built-in random model"}
    raise InvalidInputError(NO_TEXT_TOWER.format(spec=spec, what=what.get(backend, backend)))


def text_embeddings(store: FeatureStore, tower: TextTower, texts: Sequence[str]) -> np.ndarray:
    """Embeddings of ``texts`` in order: read from the store, the missing ones computed once and stored."""
    wanted = list(dict.fromkeys(texts))
    rows = store.sql(
        "SELECT text, embedding FROM text_embeddings WHERE model_key = ? AND list_contains(?, text)",
        [tower.key, wanted],
    ).to_pylist()
    have = {r["text"]: np.asarray(r["embedding"], dtype=np.float32) for r in rows}
    missing = [t for t in wanted if t not in have]
    if missing:
        emb = tower.encode(missing)
        new = [
            TextEmbeddingRow(
                model_key=tower.key, model_id=tower.model_id, text=t, embedding=e.tolist(),
                logit_scale=tower.logit_scale, logit_bias=tower.logit_bias,
            )
            for t, e in zip(missing, emb, strict=True)
        ]
        store.append("text_embeddings", new)
        have.update({t: np.asarray(e, dtype=np.float32) for t, e in zip(missing, emb, strict=True)})
    return np.stack([have[t] for t in texts])
