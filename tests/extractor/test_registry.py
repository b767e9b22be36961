"""Models as their own package: families register themselves, adapters declare capabilities, specs parse once."""

from __future__ import annotations

import pytest

from medprobe.adapters.adapter import Adapter, Capability
from medprobe.adapters.loading import load_adapter, parse_model_spec
from medprobe.adapters.models import families, generic
from medprobe.adapters.models.registry import register_family

DECODER_TYPES = {"llava", "qwen2_vl", "qwen2_5_vl", "paligemma", "gemma3", "mllama", "idefics", "idefics2",
                 "idefics3", "smolvlm"}  # fmt: skip
TOWER_TYPES = {"clip", "clip_vision_model", "siglip", "siglip_vision_model", "vit", "dinov2", "dinov2_with_registers"}


def test_every_family_registers_its_adapter_class() -> None:
    registered = families()
    assert set(registered) == DECODER_TYPES | TOWER_TYPES
    for model_type, family in registered.items():
        assert issubclass(family.adapter, Adapter), model_type
        scores = Capability.option_scoring in family.adapter.capabilities
        assert scores == (model_type in DECODER_TYPES), model_type
    assert registered["idefics"].model_class == "IdeficsForVisionText2Text"
    assert registered["clip"].names_family and registered["clip"].name == "clip"
    assert generic().adapter.capabilities >= {Capability.pooled_features, Capability.option_scoring}


def test_scoring_properties_are_declared_by_the_families_not_named_by_vqa() -> None:
    registered = families()
    no_cache = {t for t, f in registered.items() if t in DECODER_TYPES and not f.adapter.reuses_prompt_cache}
    assert no_cache == {"idefics", "mllama"}  # their text must see the image at every step
    assert {t for t, f in registered.items() if f.adapter.answer_token_type} == {"paligemma"}


def test_a_model_type_cannot_be_registered_to_two_adapters() -> None:
    registered = families()
    with pytest.raises(ValueError, match="registered twice"):
        register_family("llava", name="other")(registered["gemma3"].adapter)


@pytest.mark.parametrize(
    ("spec", "backend"),
    [("tiny-random/clip", "family"), ("efficientnet-lite0", "plugin"), ("timm/vit_base_patch16_224", "timm"),
     ("open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip"), ("org/some-model", "transformers")],
)  # fmt: skip
def test_a_spec_is_parsed_once_into_its_backend(spec: str, backend: str) -> None:
    parsed = parse_model_spec(spec)
    assert (parsed.text, parsed.backend) == (spec, backend)
    assert parse_model_spec(parsed) is parsed


def test_loaded_adapters_declare_what_they_can_do() -> None:
    clip = load_adapter(parse_model_spec("tiny-random/clip"))
    llava = load_adapter("tiny-random/llava")
    assert clip.supports(Capability.pooled_features) and not clip.supports(Capability.option_scoring)
    assert llava.supports(Capability.option_scoring) and not llava.supports(Capability.text_embeddings)


def test_the_backends_models_lists_are_the_loaders() -> None:
    from typing import get_args

    from medprobe.adapters.loading import Backend
    from medprobe.adapters.supported import BACKENDS

    assert set(BACKENDS) == (set(get_args(Backend)) - {"family"}) | {"random"}  # `family` is listed as "random"
