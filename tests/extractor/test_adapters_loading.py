"""Loading: save_pretrained round trips, Hub-style checkpoints, full-size configs on meta, bad input."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.adapters.loading import adapter_from_model, load_adapter, supported_model_types
from medprobe.errors import InvalidInputError, MedprobeError, NotFoundError
from medprobe.synthetic.models import TINY_BUILDERS, random_from_config

PROMPT = "Describe the knee."


def images(n: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (36 + 6 * i, 32, 3), dtype=np.uint8)) for i in range(n)]


@functools.cache
def tiny(name: str):
    return load_adapter(f"tiny-random/{name}")


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_save_pretrained_round_trip(name: str, tmp_path) -> None:
    built = random_from_config(name)
    built.model.save_pretrained(tmp_path)
    built.processor.save_pretrained(tmp_path)
    from_dir = load_adapter(str(tmp_path))
    original = tiny(name)
    assert type(from_dir) is type(original)
    assert from_dir.identity.adapter == original.identity.adapter
    assert from_dir.identity.n_layers == original.identity.n_layers
    assert from_dir.identity.model_id == str(tmp_path)
    assert from_dir.identity.model_revision.startswith("sha256:")
    assert load_adapter(str(tmp_path)).identity.model_revision == from_dir.identity.model_revision
    prompt = PROMPT if original.identity.takes_prompt else None
    a, b = original.preprocess(images(), prompt), from_dir.preprocess(images(), prompt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    layers = list(range(original.identity.n_layers))
    poolings = original.identity.supported_poolings
    out_a, out_b = original.forward_pooled(a, layers, poolings), from_dir.forward_pooled(b, layers, poolings)
    for key in out_a:
        torch.testing.assert_close(out_a[key], out_b[key], rtol=0, atol=0)


def test_tiny_models_are_seeded() -> None:
    assert load_adapter("tiny-random/siglip").identity.model_revision == tiny("siglip").identity.model_revision
    assert tiny("clip").identity.model_revision != tiny("siglip").identity.model_revision


def test_full_clip_checkpoint_loads_its_vision_tower(tmp_path) -> None:
    from transformers import CLIPConfig, CLIPModel

    vision = tiny("clip").model.config.to_dict()
    text = {
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    full.save_pretrained(tmp_path)
    tiny("clip").preprocessor.image_processor.save_pretrained(tmp_path)
    adapter = load_adapter(str(tmp_path))
    assert adapter.identity.adapter == "clip" and adapter.identity.n_layers == 2
    batch = adapter.preprocess(images(), None)
    out = adapter.forward_pooled(batch, [1], ["cls"])
    with torch.no_grad():
        hidden = full.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True).hidden_states
    torch.testing.assert_close(out[("cls", 1)], hidden[2][:, 0])


def test_device_map_loads_through_accelerate(tmp_path) -> None:
    built = random_from_config("llava")
    built.model.save_pretrained(tmp_path)
    built.processor.save_pretrained(tmp_path)
    adapter = load_adapter(str(tmp_path), device_map="cpu")
    assert adapter.device.type == "cpu"
    batch = adapter.preprocess(images(), PROMPT)
    torch.testing.assert_close(
        adapter.forward_pooled(batch, [2], ["last"])[("last", 2)],
        tiny("llava").forward_pooled(batch, [2], ["last"])[("last", 2)],
    )


# ----------------------------------------------------------------------------- full-size configs
@pytest.mark.parametrize(
    ("name", "n_layers", "hidden", "params"),
    [("clip", 12, 768, 87.5e6), ("siglip", 12, 768, 92.9e6), ("idefics", 32, 4096, 8.93e9)],
)
def test_full_size_configs_build_on_meta(name: str, n_layers: int, hidden: int, params: float) -> None:
    adapter = load_adapter(f"random-full/{name}", device="meta", dtype="bf16")
    assert adapter.identity.n_layers == n_layers and adapter.identity.hidden_sizes[0] == hidden
    assert adapter.identity.model_revision.startswith(f"random-init:{name}:seed=0")
    assert next(adapter.model.parameters()).dtype == torch.bfloat16
    count = sum(p.numel() for p in adapter.model.parameters())
    assert abs(count - params) / params < 0.01
    if name == "idefics":
        config = adapter.model.config
        assert config.cross_layer_interval == 4 and config.use_resampler
        assert config.vision_config.embed_dim == 1280 and config.vision_config.num_hidden_layers == 32


# ----------------------------------------------------------------------------- bad input
def test_missing_directory(tmp_path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_adapter(str(tmp_path / "nope"))


def test_missing_hub_id(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(NotFoundError, match="no-such-org/no-such-model"):
        load_adapter("no-such-org/no-such-model")


def test_unsupported_architecture_lists_supported(tmp_path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(
        tmp_path
    )
    with pytest.raises(InvalidInputError) as info:
        load_adapter(str(tmp_path))
    message = str(info.value)
    assert "'bert'" in message and "efficientnet-lite0" in message
    for model_type in supported_model_types():
        assert model_type in message


def test_remote_code_needs_the_flag(tmp_path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "my_custom", "auto_map": {"AutoConfig": "configuration_x.XConfig"}})
    )
    with pytest.raises(InvalidInputError, match="--trust-remote-code"):
        load_adapter(str(tmp_path))


def test_bad_options() -> None:
    with pytest.raises(InvalidInputError, match="dtype"):
        load_adapter("tiny-random/clip", dtype="fp8")
    with pytest.raises(NotFoundError, match="llava"):
        load_adapter("tiny-random/nope")
    with pytest.raises(InvalidInputError, match="quantization"):
        load_adapter("/", quantization="3bit")


def test_quantization_needs_bitsandbytes(tmp_path) -> None:
    pytest.importorskip("transformers")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    built = random_from_config("clip")
    built.model.save_pretrained(tmp_path)
    built.processor.save_pretrained(tmp_path)
    with pytest.raises(InvalidInputError, match="bitsandbytes"):
        load_adapter(str(tmp_path), quantization="8bit")


def test_bad_requests() -> None:
    llava, clip = tiny("llava"), tiny("clip")
    batch = llava.preprocess(images(), PROMPT)
    with pytest.raises(InvalidInputError, match="3 layers"):
        llava.forward_pooled(batch, [3], ["last"])
    with pytest.raises(InvalidInputError, match="last, image_mean, mean"):
        llava.forward_pooled(batch, [0], ["cls"])
    with pytest.raises(InvalidInputError, match="at least one"):
        llava.forward_pooled(batch, [], ["last"])
    with pytest.raises(InvalidInputError, match="prompt"):
        llava.preprocess(images(), None)
    with pytest.raises(InvalidInputError, match="no prompt"):
        clip.preprocess(images(), PROMPT)
    with pytest.raises(InvalidInputError, match="empty"):
        llava.preprocess([], PROMPT)
    no_image = dict(batch)
    no_image["input_ids"] = torch.where(batch["input_ids"] == llava.image_token_id, 0, batch["input_ids"])
    with pytest.raises(InvalidInputError, match="no image tokens"):
        llava.forward_pooled(no_image, [0], ["image_mean"])


def test_adapter_from_model_wraps_in_memory_models() -> None:
    built = random_from_config("idefics2")
    adapter = adapter_from_model(built.model, built.processor, model_id="mine")
    assert adapter.identity.adapter == "idefics2"
    assert adapter.identity.model_revision == tiny("idefics2").identity.model_revision


def test_errors_are_medprobe_errors() -> None:
    assert issubclass(NotFoundError, MedprobeError) and issubclass(InvalidInputError, MedprobeError)
