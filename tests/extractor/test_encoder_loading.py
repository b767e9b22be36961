"""Loading the field's encoders: spec dispatch, supply-chain rules, bad input, and `medprobe extract` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medprobe.adapters.loading import load_adapter, model_backend
from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.featurestore import FeatureStore
from medprobe.imaging import load_image
from medprobe.synthetic.models import save_random
from tests.helpers.cli import run_cli
from tests.helpers.datasets import KNEE, add_knee_images


def _to_pickle(directory: Path, safetensors_name: str, pickle_name: str) -> None:
    """Replace the safetensors weights by the same tensors in a pickle checkpoint."""
    tensors = load_file(str(directory / safetensors_name))
    torch.save(tensors, directory / pickle_name)
    (directory / safetensors_name).unlink()


@pytest.mark.parametrize(
    ("spec", "safetensors_name", "pickle_name"),
    [
        ("tiny-random/timm-vit", "model.safetensors", "pytorch_model.bin"),
        ("tiny-random/open_clip-vit", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
        ("tiny-random/clip", "model.safetensors", "pytorch_model.bin"),
    ],
)
def test_pickle_weights_load_only_with_the_flag(spec, safetensors_name, pickle_name, tmp_path) -> None:
    directory = save_random(spec, tmp_path / "m")
    reference = load_adapter(str(directory))
    _to_pickle(directory, safetensors_name, pickle_name)
    with pytest.raises(InvalidInputError, match=rf"{pickle_name}.*--allow-pickle"):
        load_adapter(str(directory))
    loaded = load_adapter(str(directory), allow_pickle=True)
    batch = loaded.preprocess([_image()], None)
    layer = loaded.identity.n_layers - 1
    pooling = loaded.identity.default_pooling
    torch.testing.assert_close(
        loaded.forward_pooled(batch, [layer], [pooling])[(pooling, layer)],
        reference.forward_pooled(batch, [layer], [pooling])[(pooling, layer)],
    )


def _image():
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("spec", "weights", "config"),
    [
        ("tiny-random/timm-convnext", "model.safetensors", "config.json"),
        ("tiny-random/open_clip-timm", "open_clip_model.safetensors", "open_clip_config.json"),
    ],
)
def test_a_directory_missing_its_weights_or_config_names_the_file(spec, weights, config, tmp_path) -> None:
    directory = save_random(spec, tmp_path / "m")
    (directory / weights).unlink()
    with pytest.raises(NotFoundError, match=weights):
        load_adapter(str(directory))
    shutil.rmtree(directory)
    directory.mkdir()
    with pytest.raises(NotFoundError, match=r"no config\.json .*open_clip_config\.json"):
        load_adapter(str(directory))


def test_unknown_names_say_how_to_list_them() -> None:
    with pytest.raises(NotFoundError, match=r"timm has no model 'no_such_vit'.*list_models"):
        load_adapter("timm/no_such_vit")
    with pytest.raises(NotFoundError, match=r"open_clip has no architecture 'No-Such-ViT'.*list_pretrained"):
        load_adapter("open_clip:No-Such-ViT/openai")
    with pytest.raises(InvalidInputError, match=r"open_clip:ViT-B-32/<pretrained>; tags for ViT-B-32: .*openai"):
        load_adapter("open_clip:ViT-B-32")
    with pytest.raises(NotFoundError, match=r"no pretrained tag 'nope' for ViT-B-32; choose from .*openai"):
        load_adapter("open_clip:ViT-B-32/nope")
    with pytest.raises(InvalidInputError, match=r"hf-hub:<org>/<name>"):
        load_adapter("hf-hub:just-a-name")


def test_an_unreachable_hub_repo_is_a_one_line_not_found(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(NotFoundError, match=r"unreachable.*local directory"):
        load_adapter("hf-hub:medprobe-tests/not-cached")


def test_an_architecture_without_a_block_list_says_how_to_add_one() -> None:
    from medprobe.adapters.models.timm_encoder import TimmAdapter

    model = load_adapter("tiny-random/timm-vit").model
    model.feature_info = []
    with pytest.raises(
        InvalidInputError, match=r"no block list.*supported: timm models that define feature_info.*plugin"
    ):
        TimmAdapter(model, model_id="x", revision="r")


@pytest.mark.parametrize(
    ("spec", "backend"),
    [
        ("tiny-random/timm-efficientnet", "timm"),
        ("tiny-random/open_clip-vit", "open_clip"),
        ("tiny-random/vit", "transformers"),
    ],
)
def test_local_directories_dispatch_on_their_config(spec, backend, tmp_path) -> None:
    assert model_backend(str(save_random(spec, tmp_path / "m"))) == backend


def test_hf_model_types_load_safetensors_only_from_a_local_dir(tmp_path) -> None:
    directory = save_random("tiny-random/dinov2-registers", tmp_path / "m")
    adapter = load_adapter(str(directory))
    assert adapter.identity.adapter == "dinov2-registers" and adapter.n_prefix == 5


# ----------------------------------------------------------------------------- the CLI, end to end
@pytest.mark.skipif(not KNEE.is_dir(), reason="needs ../shared/data/knee-oa-kl (the shared data folder)")
@pytest.mark.parametrize("spec", ["tiny-random/timm-vit", "tiny-random/open_clip-vit"])
def test_extract_from_a_local_encoder_directory_on_the_shared_knee_images(spec, tmp_path, capsys) -> None:
    directory = tmp_path / "model"
    code, _, err = run_cli(capsys, "models", "-m", spec, "--save", str(directory))
    assert code == 0, err
    code, out, err = run_cli(capsys, "models", "-m", str(directory), "-f", "json")
    assert code == 0, err
    described = json.loads(out)
    assert described["backend"] == spec.split("/")[1].split("-")[0] and described["n_layers"] == 3

    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    hashes = add_knee_images(store, "knee", 12)
    code, out, err = run_cli(
        capsys, "extract", "-s", url, "-d", "knee", "-m", str(directory), "--pooling", "cls,image_mean",
        "--decode-workers", "0", "--no-progress", "-b", "5", "-f", "json",
    )  # fmt: skip
    assert code == 0, err
    store.refresh()
    summary = json.loads(store.sql("SELECT summary FROM runs WHERE kind = 'extract'").column("summary")[0].as_py())
    assert summary["images_committed"] == 12 and summary["failures"] == 0
    adapter = load_adapter(str(directory))
    uris = dict(zip(*store.sql("SELECT image_hash, uri FROM images").to_pydict().values(), strict=True))
    images = [load_image(uris[h]) for h in hashes[:3]]
    reference = adapter.forward_pooled(adapter.preprocess(images, None), [0, 2], ["cls", "image_mean"])
    for pooling in ("cls", "image_mean"):
        fs_id = summary["feature_sets"][pooling]
        assert store.layers(fs_id) == [0, 1, 2]
        for layer in (0, 2):
            stored = store.read(fs_id, layer, hashes[:3]).astype(np.float32)
            expected = reference[(pooling, layer)].numpy()
            np.testing.assert_allclose(stored, expected, rtol=2e-3, atol=2e-3)  # stored as float16


def test_models_lists_backends_model_types_and_random_models(capsys) -> None:
    code, out, err = run_cli(capsys, "models", "-f", "json")
    assert code == 0, err
    rows = json.loads(out)
    names = {row["name"] for row in rows}
    assert {"transformers", "timm", "open_clip", "plugin", "random"} <= {r["backend"] for r in rows}
    assert {"gemma3", "mllama", "dinov2", "dinov2_with_registers", "vit", "clip", "siglip"} <= names
    assert {"tiny-random/timm-vit", "tiny-random/open_clip-timm", "random-full/timm-vit", "efficientnet-lite0"} <= names
    code, _, err = run_cli(capsys, "models", "--save", "x")
    assert code != 0 and "--save needs -m" in err


# ----------------------------------------------------------------------------- a local model's identity
@pytest.mark.parametrize(
    ("spec", "config"),
    [("tiny-random/vit", "config.json"), ("tiny-random/timm-vit", "config.json"),
     ("tiny-random/open_clip-vit", "open_clip_config.json")],
)  # fmt: skip
def test_a_local_models_identity_covers_its_config_not_its_readme(spec, config, tmp_path) -> None:
    directory = save_random(spec, tmp_path / "m")
    before = load_adapter(str(directory)).identity.model_revision
    (directory / "README.md").write_text("# a model card edit\n")
    (directory / ".git").mkdir()
    (directory / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert load_adapter(str(directory)).identity.model_revision == before
    data = json.loads((directory / config).read_text())
    data["medprobe_test_edit"] = 1  # any byte of the config, whether or not this library reads the key
    (directory / config).write_text(json.dumps(data))
    assert load_adapter(str(directory)).identity.model_revision != before


def test_editing_a_local_config_that_changes_the_numbers_gives_a_new_feature_set(tmp_path, capsys) -> None:
    """The hostile check: `layer_norm_eps` edited in config.json must not extend the old feature set."""
    directory = save_random("tiny-random/vit", tmp_path / "m")
    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    from tests.helpers.datasets import make_dataset

    hashes = make_dataset(store, "d", tmp_path / "imgs", 4)
    args = ("extract", "-s", url, "-d", "d", "-m", str(directory), "--pooling", "image_mean", "-l", "-1",
            "--decode-workers", "0", "--no-progress", "-f", "json")  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    first = json.loads(out)
    config = json.loads((directory / "config.json").read_text())
    config["layer_norm_eps"] = 0.5
    (directory / "config.json").write_text(json.dumps(config))
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    second = json.loads(out)
    fs_a, fs_b = first["feature_sets"]["image_mean"], second["feature_sets"]["image_mean"]
    assert fs_a != fs_b and second["images_committed"] == 4
    store.refresh()
    layer = store.layers(fs_a)[-1]
    assert np.abs(store.read(fs_a, layer, hashes) - store.read(fs_b, layer, hashes)).max() > 1e-3
