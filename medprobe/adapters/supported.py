"""What medprobe can load (backends, spec forms, model types) and what one loaded model offers (layers, poolings).

``supported()`` answers ``medprobe models``; ``describe(adapter)`` answers ``medprobe models SPEC``
from the adapter's identity alone: no image is run.
"""

from __future__ import annotations

import json
from typing import Any

from medprobe.adapters.adapter import Adapter

# backend -> (spec forms, example specs of the field's models, what layers are)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "transformers": (
        "<org>/<name> | hf-hub:<org>/<name> | local dir with config.json (model_type)",
        "google/medgemma-4b-it, microsoft/rad-dino, owkin/phikon, llava-hf/llava-onevision-qwen2-7b-ov-hf, "
        "meta-llama/Llama-3.2-11B-Vision-Instruct, OpenGVLab/InternVL3-1B-hf, HuggingFaceM4/idefics-9b-instruct",
        "VLMs: language-model decoder blocks; vision encoders: encoder blocks",
    ),
    "timm": (
        "timm/<name>[.<tag>] | hf-hub:<org>/<name> | local dir with config.json (architecture) + model.safetensors",
        "hf-hub:MahmoodLab/UNI, hf-hub:MahmoodLab/UNI2-h, hf-hub:paige-ai/Virchow2, "
        "hf-hub:prov-gigapath/prov-gigapath, hf-hub:bioptimus/H-optimus-0, timm/vit_base_patch14_dinov2.lvd142m",
        "feature_info blocks (ViT blocks, ConvNeXt/EfficientNet stages), then the pre-logits embedding",
    ),
    "open_clip": (
        "open_clip:<arch>/<pretrained> | hf-hub:<org>/<name> | local dir with open_clip_config.json + weights",
        "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224, hf-hub:wisdomik/QuiltNet-B-32, "
        "open_clip:ViT-B-16/laion2b_s34b_b88k",
        "image-tower blocks, then encode_image (the zero-shot embedding space)",
    ),
    "plugin": ("a name registered under the medprobe.models entry point", "efficientnet-lite0", "plugin-defined"),
    "random": (
        "tiny-random/<name> (tests) | random-full/<name> (benchmarks): random weights built in code",
        "tiny-random/timm-vit, random-full/timm-vit",
        "as the backend of the same architecture",
    ),
}


def supported(random_specs: list[str]) -> list[dict[str, Any]]:
    """One row per backend, transformers model type, plugin and random spec (``random_specs``): what loads."""
    from medprobe.adapters.loading import plugin_names, supported_model_types
    from medprobe.adapters.models import families

    rows: list[dict[str, Any]] = [
        {"backend": name, "kind": "backend", "name": name, "spec": forms, "examples": examples, "layers": layers}
        for name, (forms, examples, layers) in BACKENDS.items()
    ]
    registered = families()
    for model_type in supported_model_types():
        adapter = registered[model_type].adapter.__name__
        rows.append(
            {
                "backend": "transformers",
                "kind": "model_type",
                "name": model_type,
                "spec": "",
                "examples": "",
                "layers": adapter,
            }
        )
    rows.append(
        {
            "backend": "transformers",
            "kind": "model_type",
            "name": "(any other image-text-to-text type)",
            "spec": "",
            "examples": "",
            "layers": "DecoderVLMAdapter (generic)",
        }
    )
    for name in plugin_names():
        rows.append({"backend": "plugin", "kind": "plugin", "name": name, "spec": name, "examples": "", "layers": ""})
    for spec in random_specs:
        rows.append({"backend": "random", "kind": "random", "name": spec, "spec": spec, "examples": "", "layers": ""})
    return rows


def describe(adapter: Adapter, backend: str) -> dict[str, Any]:
    """A loaded model's identity: layer count, hidden sizes, poolings, preprocessing (no image is run)."""
    ident = adapter.identity
    return {
        "model": ident.model_id,
        "backend": backend,
        "adapter": ident.adapter,
        "revision": ident.model_revision,
        "n_layers": ident.n_layers,
        "hidden_sizes": list(ident.hidden_sizes),
        "poolings": list(ident.supported_poolings),
        "default_pooling": ident.default_pooling,
        "takes_prompt": ident.takes_prompt,
        "layer_semantics": ident.layer_semantics,
        "preprocessing": json.loads(ident.preprocessing),
        "extra": dict(ident.extra),
    }
