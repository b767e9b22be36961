"""The EfficientNet-Lite0 plugin with its real ImageNet weights on 50 shared knee radiographs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.adapters.loading import load_adapter, plugin_names
from medprobe.adapters.plugins.efficientnet_lite import MEAN, N_BLOCKS, STD
from medprobe.errors import InvalidInputError
from tests.helpers.paths import KNEE

N_IMAGES = 50

pytestmark = pytest.mark.skipif(not (KNEE / "labels.csv").exists(), reason="../shared/data/knee-oa-kl is absent")


@pytest.fixture(scope="module")
def knee_images() -> list[Image.Image]:
    with (KNEE / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))[:N_IMAGES]
    images = []
    for row in rows:
        with Image.open(KNEE / row["path"]) as im:
            im.load()
            images.append(im.copy())
    return images


@pytest.fixture(scope="module")
def adapter():
    return load_adapter("efficientnet-lite0")


@pytest.fixture(scope="module")
def run(adapter, knee_images):
    batch = adapter.preprocess(knee_images, None)
    layers = list(range(adapter.identity.n_layers))
    return batch, adapter.forward_pooled(batch, layers, ["spatial_mean"])


def test_registered_as_plugin() -> None:
    assert "efficientnet-lite0" in plugin_names()


def test_identity(adapter) -> None:
    ident = adapter.identity
    assert ident.n_layers == N_BLOCKS + 1 == 17
    assert ident.hidden_sizes[-1] == 1280
    assert ident.hidden_sizes[:N_BLOCKS] == tuple(b._bn2.num_features for b in adapter.model._blocks)
    assert ident.supported_poolings == ("spatial_mean",)
    assert ident.model_revision.startswith("sha256:") and not ident.takes_prompt


def test_grayscale_to_rgb_and_imagenet_normalisation(adapter, knee_images) -> None:
    assert knee_images[0].mode == "L"
    x = adapter.preprocess(knee_images[:2], None)["pixel_values"]
    assert x.shape == (2, 3, 224, 224)
    pixels = x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-5) and torch.allclose(
        pixels[:, 0], pixels[:, 2], atol=1e-5
    )
    expected = np.asarray(knee_images[0], dtype=np.float32) / 255.0  # 224 x 224 already: no resize
    assert np.allclose(pixels[0, 0].numpy(), expected, atol=1e-5)


def test_last_layer_is_the_package_models_pooled_feature(adapter, run) -> None:
    batch, out = run
    model = adapter.model
    with torch.inference_mode():
        reference = model._avg_pooling(model.extract_features(batch["pixel_values"])).flatten(1)
        logits = model(batch["pixel_values"][:4])
    ours = out[("spatial_mean", N_BLOCKS)]
    assert ours.shape == (N_IMAGES, 1280) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # the classifier on our feature gives the package's logits (the feature is the real pre-logit one)
    torch.testing.assert_close(model._fc(ours[:4]), logits, rtol=1e-4, atol=1e-4)
    assert ours.std(dim=0).mean() > 0  # features vary across images


def test_every_layer_and_shapes(adapter, run) -> None:
    _, out = run
    assert sorted(layer for _, layer in out) == list(range(17))
    for (_, layer), value in out.items():
        assert value.shape == (N_IMAGES, adapter.identity.hidden_sizes[layer])
        assert torch.isfinite(value).all()


def test_batch_invariance_and_early_stop(adapter, knee_images, run) -> None:
    _, out = run
    for i in (0, 7):
        one = adapter.forward_pooled(adapter.preprocess([knee_images[i]], None), [3, 16], ["spatial_mean"])
        torch.testing.assert_close(one[("spatial_mean", 3)][0], out[("spatial_mean", 3)][i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(one[("spatial_mean", 16)][0], out[("spatial_mean", 16)][i], rtol=1e-4, atol=1e-5)
    only_early = adapter.forward_pooled(adapter.preprocess(knee_images[:3], None), [2], ["spatial_mean"])
    assert list(only_early) == [("spatial_mean", 2)]
    torch.testing.assert_close(only_early[("spatial_mean", 2)], out[("spatial_mean", 2)][:3], rtol=1e-4, atol=1e-5)


def test_bad_requests(adapter, knee_images) -> None:
    batch = adapter.preprocess(knee_images[:1], None)
    with pytest.raises(InvalidInputError, match="17 layers"):
        adapter.forward_pooled(batch, [17], ["spatial_mean"])
    with pytest.raises(InvalidInputError, match="spatial_mean"):
        adapter.forward_pooled(batch, [0], ["cls"])
    with pytest.raises(InvalidInputError, match="no prompt"):
        adapter.preprocess(knee_images[:1], "a knee")
