"""timm and open_clip encoders: features equal the library's own outputs, loaded from a saved hub-layout directory.

Each tiny random model is saved the way a hub download leaves it and loaded back through the library's
loader (``local-dir:``); what medprobe pools for layer k must equal what timm's ``forward_intermediates`` /
``forward_head`` or open_clip's ``forward_intermediates`` / ``encode_image`` compute, within 1e-5 in fp32,
on the model's own preprocessing.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.adapters.loading import load_adapter, model_backend
from medprobe.extractor.feature_set import feature_set_row
from medprobe.synthetic.encoders import TINY_ENCODERS
from medprobe.synthetic.models import save_random

ATOL = 1e-5
TIMM = ["timm-vit", "timm-convnext", "timm-efficientnet"]
OPEN_CLIP = ["open_clip-vit", "open_clip-timm"]


def images(n: int = 3, seed: int = 0) -> list[Image.Image]:
    """Different sizes, an RGB and a grayscale image: the model's transform must resize and crop."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 35 + 14 * i, 3), dtype=np.uint8))
        out.append(image.convert("L") if i == 1 else image)
    return out


@functools.cache
def saved(name: str, root: str) -> str:
    return str(save_random(f"tiny-random/{name}", Path(root) / name))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("encoders"))


@functools.cache
def loaded(name: str, root: str):
    return load_adapter(saved(name, root))


def all_layers(adapter, batch):
    ident = adapter.identity
    return adapter.forward_pooled(batch, list(range(ident.n_layers)), ident.supported_poolings)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.float(), b.float(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", TIMM)
def test_timm_layers_equal_forward_intermediates(name: str, root: str) -> None:
    adapter = loaded(name, root)
    assert model_backend(saved(name, root)) == "timm"
    assert adapter.identity.adapter == "timm"
    batch = adapter.preprocess(images(), None)
    got = all_layers(adapter, batch)
    model = adapter.model
    x = batch["pixel_values"]
    n_blocks = adapter.identity.n_layers - 1
    with torch.no_grad():
        if adapter.layout.tokens:
            inter = model.forward_intermediates(
                x, indices=list(range(n_blocks)), intermediates_only=True, return_prefix_tokens=True
            )
            for k, (spatial, prefix) in enumerate(inter):
                patches = spatial.flatten(2).transpose(1, 2)  # NCHW -> (batch, patches, hidden)
                close(got[("image_mean", k)], patches.mean(dim=1))
                close(got[("cls", k)], prefix[:, 0])
                close(got[("mean", k)], torch.cat([prefix, patches], dim=1).mean(dim=1))
            assert prefix.shape[1] == 3  # class token + 2 register tokens, all excluded from image_mean
        else:
            inter = model.forward_intermediates(x, indices=list(range(n_blocks)), intermediates_only=True)
            assert len(inter) == n_blocks
            for k, fmap in enumerate(inter):
                close(got[("spatial_mean", k)], fmap.mean(dim=(2, 3)))
        head = model.forward_head(model.forward_features(x), pre_logits=True)
    for pooling in adapter.identity.supported_poolings:
        close(got[(pooling, n_blocks)], head)
    assert adapter.identity.hidden_sizes[-1] == head.shape[1]


@pytest.mark.parametrize("name", OPEN_CLIP)
def test_open_clip_layers_equal_the_library(name: str, root: str) -> None:
    adapter = loaded(name, root)
    assert model_backend(saved(name, root)) == "open_clip"
    batch = adapter.preprocess(images(), None)
    got = all_layers(adapter, batch)
    model = adapter.model
    x = batch["pixel_values"]
    n_blocks = adapter.identity.n_layers - 1
    with torch.no_grad():
        embedding = model.encode_image(x)
        visual = model.visual
        if name == "open_clip-vit":
            out = visual.forward_intermediates(
                x, indices=list(range(n_blocks)), intermediates_only=True, output_fmt="NLC", output_extra_tokens=True
            )
            tokens = [
                torch.cat([p, s], dim=1)
                for p, s in zip(out["image_intermediates_prefix"], out["image_intermediates"], strict=True)
            ]
        else:
            inter = visual.trunk.forward_intermediates(
                x, indices=list(range(n_blocks)), intermediates_only=True, return_prefix_tokens=True
            )
            tokens = [torch.cat([p, s.flatten(2).transpose(1, 2)], dim=1) for s, p in inter]
    for k, seq in enumerate(tokens):
        close(got[("cls", k)], seq[:, 0])
        close(got[("image_mean", k)], seq[:, 1:].mean(dim=1))
        close(got[("mean", k)], seq.mean(dim=1))
    for pooling in adapter.identity.supported_poolings:
        close(got[(pooling, n_blocks)], embedding)
    text = adapter.encode_text(["an x-ray of a knee", "a histology slide"])
    assert text.shape == (2, embedding.shape[1])


@pytest.mark.parametrize("name", TINY_ENCODERS)
def test_batched_equals_one_at_a_time_and_preprocessing_pickles(name: str, root: str) -> None:
    adapter = loaded(name, root)
    ims = images(4, seed=1)
    together = all_layers(adapter, adapter.preprocess(ims, None))
    for i, image in enumerate(ims):
        alone = all_layers(adapter, adapter.preprocess([image], None))
        for key, value in alone.items():
            close(together[key][i : i + 1], value)
    clone = pickle.loads(pickle.dumps(adapter.preprocessor))  # DataLoader workers get a copy
    assert torch.equal(clone(ims, None)["pixel_values"], adapter.preprocess(ims, None)["pixel_values"])


@pytest.mark.parametrize("name", TINY_ENCODERS)
def test_tiny_spec_equals_its_saved_directory(name: str, root: str) -> None:
    tiny, from_dir = load_adapter(f"tiny-random/{name}"), loaded(name, root)
    assert tiny.identity.preprocessing == from_dir.identity.preprocessing
    assert tiny.identity.hidden_sizes == from_dir.identity.hidden_sizes
    a, b = all_layers(tiny, tiny.preprocess(images(), None)), all_layers(from_dir, from_dir.preprocess(images(), None))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def _fs_id(adapter) -> str:
    ident = adapter.identity
    row = feature_set_row(
        ident, prompt=None, pooling=ident.default_pooling, compute_dtype="fp32", storage_dtype="float16"
    )
    return row.feature_set_id


@pytest.mark.parametrize("name", ["timm-vit", "open_clip-vit"])
def test_feature_set_id_changes_with_the_preprocessing_config(name: str, tmp_path) -> None:
    import json

    directory = save_random(f"tiny-random/{name}", tmp_path / "a")
    before = load_adapter(str(directory))
    config_name = "config.json" if name.startswith("timm") else "open_clip_config.json"
    config = json.loads((directory / config_name).read_text())
    if name.startswith("timm"):
        config["pretrained_cfg"]["interpolation"] = "bilinear"
    else:
        config["preprocess_cfg"]["interpolation"] = "bilinear"
    (directory / config_name).write_text(json.dumps(config))
    after = load_adapter(str(directory))
    assert before.identity.model_revision != after.identity.model_revision  # every file of the directory counts
    assert "bilinear" in after.identity.preprocessing
    assert _fs_id(before) != _fs_id(after)
