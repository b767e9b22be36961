"""Adapter families and which Hugging Face ``model_type`` each one serves (``registry``).

Each family registers its adapter class where it is defined (``registry.register_family``); any other model type
that transformers can load as image-text-to-text goes through the generic decoder adapter
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

from medprobe.adapters.models.registry import Family, registered


def families() -> dict[str, Family]:
    """Every registered family by ``model_type`` (the family modules are imported on first use)."""
    from medprobe.adapters.models import (  # noqa: F401  (each registers its families)
        gemma3,
        idefics,
        idefics2,
        llava,
        mllama,
        paligemma,
        qwen2_vl,
        vision_tower,
    )

    return registered()


def generic() -> Family:
    """The family of any other image-text-to-text model: the generic decoder adapter."""
    from medprobe.adapters.models.decoder import DecoderVLMAdapter

    return Family("image-text-to-text", DecoderVLMAdapter, "auto")
