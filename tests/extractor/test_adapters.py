"""Every adapter with its tiny random model: shapes, pooling against ``output_hidden_states``,
image-token masks, batch-size invariance, the early stop, and picklable preprocessing."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.adapters.adapter import POOLINGS
from medprobe.adapters.loading import load_adapter
from medprobe.adapters.models.base import text_config

VISION = ["clip", "siglip", "vit", "dinov2", "dinov2-registers"]
# non-patch tokens first: CLS (CLIP, ViT, DINOv2), plus 4 registers in the tiny DINOv2-with-registers
PREFIX = {"clip": 1, "siglip": 0, "vit": 1, "dinov2": 1, "dinov2-registers": 5}
DECODERS = [
    "llava",
    "qwen2-vl",
    "qwen2.5-vl",
    "paligemma",
    "idefics",
    "idefics2",
    "idefics3",
    "smolvlm",
    "llava-next",
    "gemma3",
    "mllama",
    "llava-onevision",
    "internvl",
]
# no dedicated adapter: the generic decoder path
ADAPTER_NAME = {
    "llava-next": "image-text-to-text",
    "llava-onevision": "image-text-to-text",
    "internvl": "image-text-to-text",
}
# the image placeholder each tiny model's text holds
IMAGE_TOKEN = {"gemma3": "<image_soft_token>", "mllama": "<|image|>", "internvl": "<IMG_CONTEXT>"}
# fewest image tokens per row where the count varies with the image (any-resolution tiles)
MIN_IMAGE_TOKENS = {"llava-next": 16, "llava-onevision": 16, "internvl": 4}
PROMPT = "Describe the knee."
ATOL, RTOL = 2e-5, 1e-4


@functools.cache
def adapter_for(name: str):
    return load_adapter(f"tiny-random/{name}")


def images(n: int = 3, seed: int = 0) -> list[Image.Image]:
    """Random images of different sizes and modes (RGB, grayscale) so padding and tiling vary."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        array = rng.integers(0, 256, (40 + 8 * i, 32 + 12 * i, 3), dtype=np.uint8)
        image = Image.fromarray(array)
        out.append(image.convert("L") if i == 1 else image)
    return out


def prompt_for(adapter) -> str | None:
    return PROMPT if adapter.identity.takes_prompt else None


def run_all(adapter, batch):
    ident = adapter.identity
    return adapter.forward_pooled(batch, list(range(ident.n_layers)), ident.supported_poolings)


def expected_image_tokens(name: str, adapter, batch) -> torch.Tensor:
    """Image tokens per row, from the processor outputs (independently of the adapter's mask)."""
    b = batch["input_ids"].shape[0]
    if name in ("llava", "paligemma"):
        return torch.full((b,), 16)  # (32 px / 8 px patches)^2
    if name == "idefics":
        return torch.ones(b, dtype=torch.long)  # the single <image> placeholder
    if name == "idefics2":
        return torch.full((b,), 4)  # perceiver latents
    if name in MIN_IMAGE_TOKENS:  # base tile + crops, unpadded (+ newline tokens): checked against a minimum
        return None
    if name == "gemma3":
        return torch.full((b,), 4)  # mm_tokens_per_image
    if name == "mllama":
        return torch.ones(b, dtype=torch.long)  # one <|image|>; the image enters by cross-attention
    if name in ("idefics3", "smolvlm"):
        real = batch["pixel_attention_mask"].flatten(2).any(-1)  # (b, sub-images) that are not padding
        return real.sum(1) * 4  # 16 patches / scale_factor^2 per tile
    grid = batch["image_grid_thw"]  # qwen: one row per image
    return grid.prod(-1) // 4  # merge 2 x 2


def reference_mask(name: str, adapter, batch) -> torch.Tensor:
    if name.startswith("qwen"):
        return batch["mm_token_type_ids"] == 1
    token = adapter.preprocessor.processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN.get(name, "<image>"))
    return batch["input_ids"] == token


# ----------------------------------------------------------------------------- shapes and identity
@pytest.mark.parametrize("name", VISION + DECODERS)
def test_shapes_and_identity(name: str) -> None:
    adapter = adapter_for(name)
    ident = adapter.identity
    assert ident.adapter == ADAPTER_NAME.get(name, name) and ident.model_id == f"tiny-random/{name}"
    assert set(ident.supported_poolings) <= set(POOLINGS) and ident.default_pooling in ident.supported_poolings
    assert ident.model_revision.startswith("sha256:") and len(ident.model_revision) == 71
    assert len(ident.hidden_sizes) == ident.n_layers
    batch = adapter.preprocess(images(), prompt_for(adapter))
    assert all(v.device.type == "cpu" for v in batch.values())
    out = run_all(adapter, batch)
    assert set(out) == {(p, i) for p in ident.supported_poolings for i in range(ident.n_layers)}
    for (_, layer), value in out.items():
        assert value.shape == (3, ident.hidden_sizes[layer]) and value.dtype == torch.float32
        assert torch.isfinite(value).all()


# ----------------------------------------------------------------------------- against output_hidden_states
@pytest.mark.parametrize("name", VISION)
def test_vision_pooling_matches_hidden_states(name: str) -> None:
    adapter = adapter_for(name)
    batch = adapter.preprocess(images(), None)
    out = run_all(adapter, batch)
    hidden = adapter.hidden_states(batch)
    assert len(hidden) == adapter.identity.n_layers + 1
    prefix = PREFIX[name]
    for i in range(adapter.identity.n_layers):
        h = hidden[i + 1]  # every layer, the last included: vision towers do not tie the post-layernorm
        torch.testing.assert_close(out[("image_mean", i)], h[:, prefix:].mean(1), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(out[("mean", i)], h.mean(1), atol=ATOL, rtol=RTOL)
        if prefix:
            torch.testing.assert_close(out[("cls", i)], h[:, 0], atol=ATOL, rtol=RTOL)


def final_norm(adapter) -> torch.nn.Module:
    parent = adapter.model.get_submodule(adapter.layer_path.rsplit(".", 1)[0])
    return parent.norm


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_pooling_matches_hidden_states(name: str) -> None:
    adapter = adapter_for(name)
    batch = adapter.preprocess(images(), PROMPT)
    out = run_all(adapter, batch)
    hidden = adapter.hidden_states(batch)
    n = adapter.identity.n_layers
    assert len(hidden) == n + 1
    attention = batch["attention_mask"].bool()
    last = attention.sum(1) - 1  # right padding: the last real token
    rows = torch.arange(len(last))
    image = reference_mask(name, adapter, batch) & attention
    for i in range(n - 1):
        h = hidden[i + 1]
        torch.testing.assert_close(out[("last", i)], h[rows, last], atol=ATOL, rtol=RTOL)
        mean = (h * attention[..., None]).sum(1) / attention.sum(1, keepdim=True)
        torch.testing.assert_close(out[("mean", i)], mean, atol=ATOL, rtol=RTOL)
        image_mean = (h * image[..., None]).sum(1) / image.sum(1, keepdim=True)
        torch.testing.assert_close(out[("image_mean", i)], image_mean, atol=ATOL, rtol=RTOL)
    # layer n-1 is before the final norm; hidden_states[-1] is after it
    with torch.no_grad():
        normed = final_norm(adapter)(out[("last", n - 1)][:, None, :])[:, 0]
    torch.testing.assert_close(normed, hidden[-1][rows, last], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out[("last", n - 1)], hidden[-1][rows, last], atol=1e-3)


# ----------------------------------------------------------------------------- image-token masks
@pytest.mark.parametrize("name", DECODERS)
def test_image_token_masks(name: str) -> None:
    adapter = adapter_for(name)
    batch = adapter.preprocess(images(), PROMPT)
    masks = adapter.token_masks(batch, ["image_mean"])
    assert torch.equal(masks.image, reference_mask(name, adapter, batch) & batch["attention_mask"].bool())
    expected = expected_image_tokens(name, adapter, batch)
    if expected is None:
        assert (masks.image.sum(1) >= MIN_IMAGE_TOKENS[name]).all()  # at least the base tile's tokens
    else:
        assert torch.equal(masks.image.sum(1), expected)
    if name == "paligemma":  # image tokens come first
        assert masks.image[:, :16].all() and not masks.image[:, 16:].any()
    if name.startswith("qwen"):
        assert torch.equal(masks.image, batch["input_ids"] == adapter.image_token_id)


def test_qwen_dynamic_resolution_pads_on_the_right() -> None:
    adapter = adapter_for("qwen2-vl")
    batch = adapter.preprocess(images(), PROMPT)
    counts = batch["attention_mask"].sum(1)
    assert len(set(counts.tolist())) > 1  # the three sizes give different sequence lengths
    for row, count in enumerate(counts.tolist()):
        assert batch["attention_mask"][row, :count].all() and not batch["attention_mask"][row, count:].any()


@pytest.mark.parametrize("name", DECODERS)
def test_the_image_reaches_the_text(name: str) -> None:
    adapter = adapter_for(name)
    a = adapter.forward_pooled(adapter.preprocess(images(1, seed=1), PROMPT), [adapter.identity.n_layers - 1], ["last"])
    b = adapter.forward_pooled(adapter.preprocess(images(1, seed=2), PROMPT), [adapter.identity.n_layers - 1], ["last"])
    assert not torch.allclose(a[("last", adapter.identity.n_layers - 1)], b[("last", adapter.identity.n_layers - 1)])


# ----------------------------------------------------------------------------- batch-size invariance
@pytest.mark.parametrize("name", VISION + DECODERS)
def test_batched_equals_one_at_a_time(name: str) -> None:
    adapter = adapter_for(name)
    imgs = images()
    batched = run_all(adapter, adapter.preprocess(imgs, prompt_for(adapter)))
    for row, image in enumerate(imgs):
        alone = run_all(adapter, adapter.preprocess([image], prompt_for(adapter)))
        for key, value in alone.items():
            torch.testing.assert_close(batched[key][row], value[0], atol=1e-5, rtol=1e-4, msg=f"{name} {key}")


@pytest.mark.parametrize("name", ["clip", "llava", "idefics"])
def test_early_stop_gives_the_same_numbers(name: str) -> None:
    adapter = adapter_for(name)
    batch = adapter.preprocess(images(), prompt_for(adapter))
    full = run_all(adapter, batch)
    pooling = adapter.identity.default_pooling
    early = adapter.forward_pooled(batch, [0], [pooling])
    assert list(early) == [(pooling, 0)]
    torch.testing.assert_close(early[(pooling, 0)], full[(pooling, 0)])


# ----------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("name", VISION + DECODERS)
def test_preprocessor_pickles(name: str) -> None:
    adapter = adapter_for(name)
    clone = pickle.loads(pickle.dumps(adapter.preprocessor))
    a = adapter.preprocess(images(2), prompt_for(adapter))
    b = clone(images(2), prompt_for(adapter))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "labels" not in a


def test_chat_template_used_when_the_processor_has_one() -> None:
    adapter = adapter_for("qwen2-vl")
    text = adapter.preprocessor.format_prompt(PROMPT)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>" + PROMPT)
    assert text.endswith("<|im_start|>assistant\n")
    assert "chat_template" in adapter.identity.preprocessing and "im_start" in adapter.identity.preprocessing
    smol = adapter_for("smolvlm").preprocessor.format_prompt(PROMPT)
    assert smol == f"<|im_start|>User:<image>{PROMPT}<end_of_utterance>\nAssistant:"
    plain = adapter_for("llava").preprocessor.format_prompt(PROMPT)
    assert plain == f"USER: <image>\n{PROMPT} ASSISTANT:"


def test_layer_count_is_the_text_models() -> None:
    for name in DECODERS:
        adapter = adapter_for(name)
        assert adapter.identity.n_layers == text_config(adapter.model.config).num_hidden_layers == 3
        assert len(adapter.layer_modules) == 3
