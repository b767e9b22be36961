"""Adapter families and which Hugging Face ``model_type`` each one serves.

``FAMILIES`` maps a ``config.model_type`` to its adapter class; any other model type that
transformers can load as image-text-to-text goes through the generic decoder adapter
(``decoder.DecoderVLMAdapter``), which finds the language model's block list by itself.

What layer ``i`` means (recorded in every feature set's ``layer_semantics``):

* decoder VLMs: the output of language-model decoder block ``i`` (residual stream), before the
  final norm, so it equals ``output_hidden_states[i + 1]`` for ``i < n_layers - 1``; the last layer
  is the pre-norm state, whereas ``output_hidden_states[-1]`` is after the norm. Idefics v1's block
  ``i`` includes the gated cross-attention block that precedes it.
* CLIP / SigLIP / ViT / DINOv2 towers: the output of encoder block ``i`` before the final norm
  (``output_hidden_states[i + 1]`` for every ``i``).

Capture: forward hooks on the requested blocks only; each pools on the device (float32) as its
block finishes, and the deepest one stops the forward pass (later blocks and the LM head never run).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """How to load and wrap one architecture family."""

    name: str
    adapter: str  # "module:Class" under medprobe.extractor.models
    model_class: str  # transformers class (vision towers) or "auto" (AutoModelForImageTextToText)
    processor: str = "auto"  # "auto", "image" (AutoImageProcessor) or "module:Class"


VISION_ADAPTER = _VISION = "medprobe.extractor.models.vision_tower:VisionTowerAdapter"
_QWEN = "medprobe.extractor.models.qwen2_vl"

FAMILIES: dict[str, Family] = {
    "clip": Family("clip", _VISION, "CLIPVisionModel", "image"),
    "clip_vision_model": Family("clip", _VISION, "CLIPVisionModel", "image"),
    "siglip": Family("siglip", _VISION, "SiglipVisionModel", "image"),
    "siglip_vision_model": Family("siglip", _VISION, "SiglipVisionModel", "image"),
    "vit": Family("vit", _VISION, "ViTModel", "image"),  # Phikon
    "dinov2": Family("dinov2", _VISION, "Dinov2Model", "image"),  # RAD-DINO, DINOv2
    "dinov2_with_registers": Family("dinov2-registers", _VISION, "Dinov2WithRegistersModel", "image"),
    "llava": Family("llava", "medprobe.extractor.models.llava:LlavaAdapter", "auto"),
    "qwen2_vl": Family("qwen2-vl", f"{_QWEN}:Qwen2VLAdapter", "auto", f"{_QWEN}:Qwen2VLImageOnlyProcessor"),
    "qwen2_5_vl": Family("qwen2.5-vl", f"{_QWEN}:Qwen2_5_VLAdapter", "auto", f"{_QWEN}:Qwen2_5_VLImageOnlyProcessor"),
    "paligemma": Family("paligemma", "medprobe.extractor.models.paligemma:PaliGemmaAdapter", "auto"),
    "gemma3": Family("gemma3", "medprobe.extractor.models.gemma3:Gemma3Adapter", "auto"),  # MedGemma
    "mllama": Family("mllama", "medprobe.extractor.models.mllama:MllamaAdapter", "auto"),  # Llama 3.2 Vision
    "idefics": Family("idefics", "medprobe.extractor.models.idefics:IdeficsAdapter", "IdeficsForVisionText2Text"),
    "idefics2": Family("idefics2", "medprobe.extractor.models.idefics2:Idefics2Adapter", "auto"),
    "idefics3": Family("idefics3", "medprobe.extractor.models.idefics2:Idefics3Adapter", "auto"),
    "smolvlm": Family(
        "smolvlm",
        "medprobe.extractor.models.idefics2:SmolVLMAdapter",
        "auto",
        "medprobe.extractor.models.idefics2:SmolVLMImageOnlyProcessor",
    ),
}
GENERIC = Family("image-text-to-text", "medprobe.extractor.models.decoder:DecoderVLMAdapter", "auto")


def resolve(path: str) -> type:
    """Import ``module:Class``."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
