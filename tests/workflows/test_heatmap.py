"""medprobe heatmap: exact maps whose mean is the probe's logit on the stored pooled row (ViT, CNN, decoder VLM),
approximate maps labelled, galleries, the border signal in the heatmaps table and the report, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medprobe
from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.featurestore import FeatureStore
from medprobe.trainer.heatmaps import Grid, border_shares, exactness
from tests.helpers.cli import run_cli


def _toy(folder: Path) -> Path:
    """Two classes of noise images; class b has a bright top-left corner (evidence in the border)."""
    rng = np.random.default_rng(0)
    for i in range(48):
        name = "ab"[i % 2]
        pixels = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
        if name == "b":
            pixels[:8, :8] = 250
        path = folder / name / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    return folder


def _probe(store: FeatureStore, model: str, pooling: str, layer: int, prompt: str | None = None) -> str:
    medprobe.extract(dataset="toy", model=model, layers=str(layer), pooling=pooling, tokens=True, prompt=prompt,
                     storage_dtype="float32", no_progress=True, store=store)  # fmt: skip
    run = medprobe.train(task="label", dataset="toy", model=model, layers=str(layer), pooling=pooling, n_boot=20,
                         no_progress=True, store=store)  # fmt: skip
    return run.probe_id


@pytest.fixture
def toy_store(tmp_path: Path) -> FeatureStore:
    store = FeatureStore.open(str(tmp_path / "store"))
    medprobe.ingest(source=str(_toy(tmp_path / "imgs")), layout="imagefolder", dataset="toy", store=store)
    return store


@pytest.mark.parametrize(("model", "pooling", "layer", "prompt"), [
    ("tiny-random/timm-vit", "image_mean", 1, None), ("tiny-random/timm-convnext", "spatial_mean", 1, None),
    ("tiny-random/llava", "image_mean", 2, "Describe the image.")])  # fmt: skip
def test_an_exact_maps_mean_is_the_probes_logit_on_the_stored_pooled_row(toy_store: FeatureStore, tmp_path: Path,
                                                                         model: str, pooling: str, layer: int,
                                                                         prompt: str | None) -> None:  # fmt: skip
    probe = _probe(toy_store, model, pooling, layer, prompt)
    result = medprobe.heatmap(probe=probe, dataset="toy", split="test", out=str(tmp_path / "maps"), n_boot=50,
                              store=toy_store)  # fmt: skip
    assert result.exact and result.n_images == len(result.rows()) > 0
    sp = medprobe.load_probe(probe, store=toy_store)
    for row in result.rows():
        # the pooled logit comes from the model's pooled row in the store, the map from the stored tokens
        pooled = toy_store.read(sp.feature_set_id, layer, [row["image_hash"]])
        logits = sp.probe.decision_function(pooled)[0]
        k = sp.class_names.index(row["predicted"])
        expected = logits[0] * (1 if k == 1 else -1) if sp.kind == "binary" else logits[k]
        assert row["pooled_logit"] == pytest.approx(expected, abs=1e-9)
        assert abs(row["map_mean"] - row["pooled_logit"]) <= 1e-5 * max(1.0, abs(row["pooled_logit"]))
        assert Path(row["png"]).is_file()
    stored = toy_store.sql("SELECT count(*) FROM heatmaps WHERE run_id = ?", [result.run_id]).column(0)[0].as_py()
    assert stored == result.n_images


def test_galleries_border_signal_and_the_report(toy_store: FeatureStore, tmp_path: Path) -> None:
    probe = _probe(toy_store, "tiny-random/timm-vit", "image_mean", 1)
    result = medprobe.heatmap(probe=probe, dataset="toy", out=str(tmp_path / "maps"), gallery=4, n_boot=200,
                              store=toy_store)  # fmt: skip
    names = {Path(p).name for p in result.paths}
    assert {"gallery_a_true_positives.png", "gallery_b_true_positives.png", "mean_maps.png"} <= names
    # the bright corner of class b lies in the border (a 1-token ring of the 4 x 4 grid: 12 of 16 tokens)
    b = result.border["b"]
    assert result.border_tokens == 1 and b["border_area"] == pytest.approx(0.75) and b["n"] == 24
    assert b["ci_low"] > b["border_area"], b
    # the share per image against a computation from the stored tokens
    row = next(r for r in result.rows() if r["label"] == "b")
    sp = medprobe.load_probe(probe, store=toy_store)
    tokens = toy_store.read(result.token_feature_set_id, 1, [row["image_hash"]])[0].reshape(19, 32)[3:]
    logit = sp.probe.decision_function(tokens)[:, 0].reshape(4, 4)
    centred = np.clip(logit - logit.mean(), 0, None)
    ring = np.ones((4, 4), bool)
    ring[1:3, 1:3] = False
    assert json.loads(row["border_shares"])["b"] == pytest.approx(centred[ring].sum() / centred.sum())
    quiet = medprobe.heatmap(probe=probe, dataset="toy", out=str(tmp_path / "quiet"), overlays=False, n_boot=20,
                             store=toy_store)  # fmt: skip
    assert all(r["png"] is None for r in quiet.rows()) and len(quiet.paths) == len(result.paths) - result.n_images
    report = medprobe.report(run_ids=[_train_run(toy_store, probe)], out=str(tmp_path / "rep"), store=toy_store)
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Where the evidence lies" in summary and f"| {probe} | b | 24 |" in summary
    assert report.paths


def _train_run(store: FeatureStore, probe: str) -> str:
    return store.sql("SELECT run_id FROM probe_results WHERE probe_id = ?", [probe]).column(0)[0].as_py()


def test_a_cls_probe_is_labelled_approximate_and_an_image_path_runs_through_the_model(toy_store: FeatureStore,
                                                                                       tmp_path: Path,
                                                                                       capsys) -> None:  # fmt: skip
    probe = _probe(toy_store, "tiny-random/timm-vit", "cls", 1)
    path = tmp_path / "new.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(path)
    code, out, err = run_cli(capsys, "heatmap", "--probe", probe, "--image", str(path), "-o", str(tmp_path / "m"),
                             "--store", toy_store.url)  # fmt: skip
    assert code == 0, err
    assert "1 image(s) mapped" in " ".join(out.split()) and "approximate" in out
    toy_store.refresh()
    row = toy_store.sql("SELECT * FROM heatmaps").to_pylist()[0]
    assert row["image_hash"] is None and row["source"] == str(path) and not row["exact"]


def test_bad_input(toy_store: FeatureStore, tmp_path: Path) -> None:
    medprobe.extract(dataset="toy", model="tiny-random/timm-vit", layers="1", pooling="image_mean",
                     storage_dtype="float32", no_progress=True, store=toy_store)  # fmt: skip
    run = medprobe.train(task="label", dataset="toy", model="tiny-random/timm-vit", layers="1", pooling="image_mean",
                         n_boot=20, no_progress=True, store=toy_store)  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"has no tokens stored at layer 1: run `medprobe extract -d toy -m "
                                                r"tiny-random/timm-vit --layers 1 --pooling image_mean --tokens`"):
        medprobe.heatmap(probe=run.probe_id, dataset="toy", out=str(tmp_path / "m"), store=toy_store)
    probe = _probe(toy_store, "tiny-random/timm-vit", "image_mean", 1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(InvalidInputError, match=r"broken\.png: cannot read the image"):
        medprobe.heatmap(probe=probe, image=str(broken), out=str(tmp_path / "m"), store=toy_store)
    with pytest.raises(InvalidInputError, match="exactly one of"):
        medprobe.heatmap(probe=probe, image=str(broken), dataset="toy", store=toy_store)
    with pytest.raises(NotFoundError, match="are not in dataset 'toy'"):
        medprobe.heatmap(probe=probe, hashes="ab" * 32, out=str(tmp_path / "m"), store=toy_store)
    # a pooling the tokens have no reading of
    with pytest.raises(InvalidInputError, match="no per-token reading"):
        exactness("spatial_mean", Grid(1, 4, 4, 32, "image_mean"))


def test_border_shares_by_hand() -> None:
    maps = np.zeros((3, 3, 1))
    maps[0, 0, 0] = 9.0  # all evidence above the mean (1.0) in a border token
    maps[1, 1, 0] = 3.0  # and some in the centre
    # mean 12/9; centred positives: 9 - 4/3 = 23/3 at the corner, 3 - 4/3 = 5/3 at the centre
    assert border_shares(maps, 1)[0] == pytest.approx((23 / 3) / (23 / 3 + 5 / 3))
    assert np.isnan(border_shares(np.ones((3, 3, 1)), 1)[0])
