"""``medprobe zeroshot``: probabilities equal the library's own image/text embeddings and logit scale (1e-5)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.featurestore import FeatureStore
from medprobe.schemas import TaskRow
from medprobe.synthetic.models import save_random
from medprobe.trainer.zeroshot import TEMPLATE_SETS
from tests.helpers.cli import run_cli
from tests.helpers.datasets import add_image_files


def _dataset(store: FeatureStore, folder: Path) -> list[str]:
    """18 random images: binary 'finding', 3-class 'grade', multilabel 'signs'; a third of them test."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    files = []
    for i in range(18):
        path = folder / f"x{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        files.append((path, "test" if i % 3 == 0 else "train"))
    hashes = add_image_files(store, "toy", files)
    labels = []
    for i, h in enumerate(hashes):
        signs = [s for j, s in enumerate(["effusion", "nodule"]) if (i >> j) & 1]
        value = {"finding": ["normal", "pneumonia"][i % 2], "grade": ["none", "mild", "severe"][(i // 3) % 3],
                 "signs": signs, "code": str(i % 2)}  # fmt: skip
        labels.append((h, value))
    from medprobe.schemas import DatasetImageRow

    store.append("dataset_images", [
        DatasetImageRow(dataset="toy", image_hash=h, split="test" if i % 3 == 0 else "train",
                        source_path=f"x{i:02d}.png", labels=json.dumps(v))
        for i, (h, v) in enumerate(labels)
    ])  # fmt: skip
    store.append("tasks", [
        TaskRow(dataset="toy", task="finding", type="binary", label_columns=["finding"],
                class_names=["normal", "pneumonia"], primary_metric="macro_auc"),
        TaskRow(dataset="toy", task="grade", type="multiclass", label_columns=["grade"],
                class_names=["none", "mild", "severe"], primary_metric="macro_auc"),
        TaskRow(dataset="toy", task="signs", type="multilabel", label_columns=["signs"],
                class_names=["effusion", "nodule"], primary_metric="macro_auc"),
        TaskRow(dataset="toy", task="code", type="binary", label_columns=["code"], class_names=["0", "1"],
                primary_metric="macro_auc"),
    ])  # fmt: skip
    return hashes


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zs-models")
    out = {}
    for name in ("clip-contrastive", "siglip-contrastive", "open_clip-vit"):
        out[name] = save_random(f"tiny-random/{name}", root / name)
    # give the SigLIP head a scale and bias that matter (random init leaves them at 1 and 0)
    from safetensors.torch import load_file, save_file

    path = out["siglip-contrastive"] / "model.safetensors"
    state = load_file(str(path))
    state["logit_scale"] = torch.tensor([math.log(7.0)])
    state["logit_bias"] = torch.tensor([-1.3])
    save_file(state, str(path), metadata={"format": "pt"})
    return out


def _stored(store: FeatureStore, probe_id: str) -> tuple[list[str], np.ndarray]:
    rows = store.sql("SELECT image_hash, probabilities FROM predictions WHERE probe_id = ? ORDER BY image_hash",
                     [probe_id]).to_pylist()  # fmt: skip
    return [r["image_hash"] for r in rows], np.array([r["probabilities"] for r in rows], dtype=np.float64)


def _images(store: FeatureStore, hashes: list[str]) -> list[Image.Image]:
    uris = dict(store.sql("SELECT image_hash, uri FROM images").to_pylist() and
                [(r["image_hash"], r["uri"]) for r in store.sql("SELECT image_hash, uri FROM images").to_pylist()])
    return [Image.open(uris[h]).convert("RGB") for h in hashes]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _ensemble(text: torch.Tensor) -> torch.Tensor:
    return _unit(_unit(text).mean(0))


def _hf_reference(path: Path, family: str, images, prompts: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    import transformers

    cls = transformers.CLIPModel if family == "clip" else transformers.SiglipModel
    model = cls.from_pretrained(path).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        img = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        classes = []
        for p in prompts:
            if family == "clip":
                tok = tokenizer(p, padding=True, return_tensors="pt")
                t = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
            else:
                tok = tokenizer(p, padding="max_length", max_length=64, return_tensors="pt")
                t = model.get_text_features(input_ids=tok["input_ids"])
            classes.append(_ensemble(t.pooler_output))
    return _unit(img), torch.stack(classes), model


def _zeroshot(capsys, store: FeatureStore, *args: str) -> dict:
    code, out, err = run_cli(capsys, "zeroshot", "-f", "json", "--store", store.url, "--n-boot", "50", *args)
    assert code == 0, err
    return json.loads(out)


def test_clip_multiclass_softmax_with_the_template_ensemble(store, tmp_path, models, capsys):
    _dataset(store, tmp_path / "img")
    doc = _zeroshot(capsys, store, "-t", "grade", "-m", str(models["clip-contrastive"]), "--templates", "xray")
    assert doc["probabilities"] == "softmax" and len(doc["prompts"]["mild"]) == len(TEMPLATE_SETS["xray"]) > 1
    hashes, ours = _stored(store, doc["probe_id"])
    prompts = [[t.format(c) for t in TEMPLATE_SETS["xray"]] for c in ("none", "mild", "severe")]
    img, W, model = _hf_reference(models["clip-contrastive"], "clip", _images(store, hashes), prompts)
    expected = torch.softmax(model.logit_scale.exp() * img @ W.T, dim=1).detach().double().numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    row = store.sql("SELECT * FROM probe_results WHERE probe_id = ?", [doc["probe_id"]]).to_pylist()[0]
    assert row["method"] == "zeroshot" and row["solver"] == "softmax" and row["c"] is None and row["n_train"] == 0
    # a rerun extracts nothing and embeds no text again
    n_text = store.sql("SELECT count(*) FROM text_embeddings").column(0)[0].as_py()
    again = _zeroshot(capsys, store, "-t", "grade", "-m", str(models["clip-contrastive"]), "--templates", "xray")
    assert again["images_extracted"] == 0
    assert store.sql("SELECT count(*) FROM raw_text_embeddings").column(0)[0].as_py() == n_text
    np.testing.assert_allclose(_stored(store, again["probe_id"])[1], ours, atol=0)


def test_siglip_sigmoid_with_bias_binary_and_multilabel(store, tmp_path, models, capsys):
    _dataset(store, tmp_path / "img")
    path = models["siglip-contrastive"]
    doc = _zeroshot(capsys, store, "-t", "signs", "-m", str(path))
    assert doc["probabilities"] == "sigmoid" and doc["logit_bias"] == pytest.approx(-1.3)
    hashes, ours = _stored(store, doc["probe_id"])
    prompts = [[t.format(c) for t in TEMPLATE_SETS["generic"]] for c in ("effusion", "nodule")]
    img, W, model = _hf_reference(path, "siglip", _images(store, hashes), prompts)
    logits = model.logit_scale.exp() * img @ W.T + model.logit_bias
    np.testing.assert_allclose(ours, torch.sigmoid(logits).detach().double().numpy(), atol=1e-5)
    doc = _zeroshot(capsys, store, "-t", "finding", "-m", str(path))
    _, ours = _stored(store, doc["probe_id"])
    prompts = [[t.format(c) for t in TEMPLATE_SETS["generic"]] for c in ("normal", "pneumonia")]
    _, W, _ = _hf_reference(path, "siglip", _images(store, hashes), prompts)
    p1 = torch.sigmoid(model.logit_scale.exp() * img @ W[1] + model.logit_bias).detach().double().numpy()
    np.testing.assert_allclose(ours[:, 1], p1, atol=1e-5)
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-9)


def test_open_clip_binary_from_a_templates_file(store, tmp_path, models, capsys):
    _dataset(store, tmp_path / "img")
    spec = {"normal": ["a normal chest x-ray."], "pneumonia": ["a chest x-ray with pneumonia.", "pneumonia."]}
    file = tmp_path / "prompts.json"
    file.write_text(json.dumps(spec))
    doc = _zeroshot(capsys, store, "-t", "finding", "-m", str(models["open_clip-vit"]), "--templates", str(file))
    hashes, ours = _stored(store, doc["probe_id"])
    from medprobe.adapters.contrastive import load_contrastive

    adapter, _ = load_contrastive(str(models["open_clip-vit"]))
    model = adapter.model
    with torch.no_grad():
        x = torch.stack([adapter.preprocessor.transform(im) for im in _images(store, hashes)])
        img = _unit(model.encode_image(x))
        W = torch.stack([_ensemble(model.encode_text(adapter.tokenizer(spec[c]))) for c in ("normal", "pneumonia")])
    expected = torch.softmax(model.logit_scale.exp() * img @ W.T, dim=1).detach().double().numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_zeroshot_bad_input(store, tmp_path, models, capsys):
    _dataset(store, tmp_path / "img")
    clip = str(models["clip-contrastive"])
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps({"normal": ["a normal x-ray."]}))
    cases = [
        (["-t", "finding", "-m", "tiny-random/clip"], "needs a model with a text tower"),
        (["-t", "finding", "-m", "efficientnet-lite0"], "needs a model with a text tower"),
        (["-t", "code", "-m", clip], "names its classes by codes (0, 1)"),
        (["-t", "finding", "-m", clip, "--templates", str(bad_file)], "no prompts for class 'pneumonia'"),
        (["-t", "finding", "-m", clip, "--templates", "nosuchset"], "neither a built-in set"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, "zeroshot", "--store", store.url, *args)
        assert code != 0 and message in err, (args, err)
