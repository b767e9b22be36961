"""A whole study through the Python API, as a notebook runs it, and the same study through the CLI into a second
store: the stored probe results, predictions and VQA answers are equal."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medprobe
from medprobe.errors import NotFoundError
from medprobe.featurestore import FeatureStore
from tests.helpers.cli import run_cli
from tests.helpers.paths import KNEE, SHARED_DATA, require

ENCODER = "tiny-random/clip-contrastive"
OTHER = "tiny-random/vit"
VLM = "tiny-random/llava"
VQA_RAD = SHARED_DATA / "vqa-rad"


def _knee_subset(tmp: Path) -> Path:
    """49 knees of the shared subset (every 25th train and every 16th val row of the grade-sorted list, so every
    grade is in) with a binary task: KL grade >= 2."""
    rows = list(csv.DictReader((require(KNEE) / "labels.csv").open()))
    picked = [r for r in rows if r["split"] == "train"][::25] + [r for r in rows if r["split"] == "val"][::16]
    out = tmp / "knee49.csv"
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "oa", "split", "patient_id"])
        for r in picked:
            w.writerow([str(KNEE / r["path"]), "yes" if int(r["kl_grade"]) >= 2 else "no", r["split"], r["patient_id"]])
    return out


def _api_study(manifest: Path, store: str, out: Path) -> dict[str, Any]:
    """The notebook: one call per step, each result used by the next."""
    st = medprobe.open_store(store) if Path(store).exists() else store
    ing = medprobe.ingest(source=str(manifest), layout="csv", dataset="knee", label_column=["oa"],
                          split_column="split", group_column="patient_id", no_progress=True, store=st)  # fmt: skip
    assert ing.memberships_new == 49 and ing.failures == 0
    st = medprobe.open_store(store)
    a = medprobe.extract(dataset="knee", model=ENCODER, decode_workers=0, no_progress=True, store=st)
    b = medprobe.extract(dataset="knee", model=OTHER, layers="-1", decode_workers=0, no_progress=True, store=st)
    fs_a, fs_b = next(iter(a.feature_sets.values())), next(iter(b.feature_sets.values()))
    sweep = medprobe.sweep(task="oa", feature_set=fs_a, test_split="val", c_grid=[0.01, 1.0], cv=3, n_boot=50,
                           no_progress=True, store=st)  # fmt: skip
    cmp = medprobe.compare(task="oa", feature_set=[fs_a, fs_b], layers=["-1", "-1"], test_split="val",
                           c_grid="0.01,1", cv=3, n_boot=50, no_progress=True, store=st)  # fmt: skip
    clip_dir = medprobe.models(model=ENCODER, save=str(out.parent / "clip")).saved  # a hub layout, as downloaded
    assert clip_dir is not None
    zs = medprobe.zeroshot(task="oa", model=clip_dir, test_split="val", n_boot=50, no_progress=True, store=st)
    some_hash = st.sql("SELECT min(image_hash) AS h FROM dataset_images").column(0)[0].as_py()
    hits = medprobe.search(feature_set=fs_a, image_hash=some_hash, k=3, store=st)
    vqa_in = medprobe.vqa.ingest(source=str(VQA_RAD), name="vqa-rad", store=st)
    vqa = medprobe.vqa.run(items="vqa-rad", model=VLM, limit=6, n_boot=50, no_progress=True, store=st)
    rep = medprobe.report(run_ids=[sweep.run_id, cmp.run_id], out=str(out), store=st)
    return {"ingest": ing, "sweep": sweep, "compare": cmp, "zeroshot": zs, "search": hits, "vqa_ingest": vqa_in,
            "vqa": vqa, "report": rep, "fs": (fs_a, fs_b), "hash": some_hash, "clip_dir": clip_dir}  # fmt: skip


def _cli_study(manifest: Path, store: str, api: dict[str, Any], capsys: Any) -> dict[str, Any]:
    fs, some_hash = api["fs"], api["hash"]

    def cli(*args: str) -> Any:
        code, out, err = run_cli(capsys, *args, "--store", store)
        assert code == 0, err
        return json.loads(out) if out.strip().startswith(("{", "[")) else out

    cli("ingest", str(manifest), "--layout", "csv", "-d", "knee", "--label-column", "oa", "--split-column", "split",
        "--group-column", "patient_id", "-f", "json")  # fmt: skip
    cli("extract", "-d", "knee", "-m", ENCODER, "--decode-workers", "0", "-f", "json")
    cli("extract", "-d", "knee", "-m", OTHER, "-l", "-1", "--decode-workers", "0", "-f", "json")
    common = ["--test-split", "val", "--c-grid", "0.01,1", "--cv", "3", "--n-boot", "50", "-f", "json"]
    out: dict[str, Any] = {"sweep": cli("sweep", "-t", "oa", "--feature-set", fs[0], *common)}
    out["compare"] = cli("compare", "-t", "oa", "--feature-set", f"{fs[0]},{fs[1]}", "-l", "-1,-1", *common)
    out["zeroshot"] = cli("zeroshot", "-t", "oa", "-m", api["clip_dir"], "--test-split", "val", "--n-boot", "50",
                          "-f", "json")  # fmt: skip
    out["search"] = cli("search", "--feature-set", fs[0], "--image-hash", some_hash, "--k", "3", "-f", "json")
    cli("vqa", "ingest", str(VQA_RAD), "--name", "vqa-rad", "-f", "json")
    out["vqa"] = cli("vqa", "run", "--items", "vqa-rad", "-m", VLM, "--limit", "6", "--n-boot", "50", "-f", "json")
    return out


def _results(store: FeatureStore, kind: str) -> list[dict[str, Any]]:
    rows = store.sql(
        "SELECT r.layer, r.feature_set_id, r.c, r.method, r.n_train, r.n_test, r.metrics FROM probe_results r "
        "JOIN runs USING (run_id) WHERE runs.kind = ? ORDER BY r.feature_set_id, r.layer", [kind]
    ).to_pylist()
    for r in rows:
        m = json.loads(r.pop("metrics"))
        r["test"] = {k: m[k] for k in ("macro_auc", "accuracy", "macro_f1") if k in m}
    return rows


def _predictions(store: FeatureStore, kind: str) -> dict[tuple, list[float]]:
    rows = store.sql(
        "SELECT r.feature_set_id, r.layer, p.image_hash, p.probabilities FROM predictions p JOIN probe_results r "
        "USING (run_id, probe_id) JOIN runs USING (run_id) WHERE runs.kind = ?", [kind]
    ).to_pylist()
    return {(r["feature_set_id"], r["layer"], r["image_hash"]): r["probabilities"] for r in rows}


def test_a_study_through_the_api_equals_the_same_study_through_the_cli(tmp_path: Path, capsys) -> None:
    require(VQA_RAD)
    manifest = _knee_subset(tmp_path)
    api_url, cli_url = str(tmp_path / "api-store"), str(tmp_path / "cli-store")
    api = _api_study(manifest, api_url, tmp_path / "report")
    cli = _cli_study(manifest, cli_url, api, capsys)

    # the CLI prints the API's result objects
    for key in ("sweep", "compare", "zeroshot"):
        got, want = cli[key], api[key].to_dict()
        assert got["test"] == want["test"], key
    assert [n["image_hash"] for n in cli["search"]["neighbours"]] == [n["image_hash"] for n in api["search"].neighbours]
    assert cli["vqa"]["accuracy"] == api["vqa"].accuracy and cli["vqa"]["run_id"] == api["vqa"].run_id

    a, c = FeatureStore.open(api_url), FeatureStore.open(cli_url)
    for kind in ("sweep", "compare", "zeroshot"):
        assert _results(a, kind) == _results(c, kind), kind
        pa_, pc = _predictions(a, kind), _predictions(c, kind)
        assert pa_.keys() == pc.keys() and pa_
        for key, probs in pa_.items():
            np.testing.assert_array_equal(probs, pc[key])
    vqa_sql = ("SELECT item_id, rotation, option_order, loglik_sum, predicted, correct FROM vqa_predictions "
               "ORDER BY item_id, rotation")  # fmt: skip
    assert a.sql(vqa_sql).to_pylist() == c.sql(vqa_sql).to_pylist() != []
    # typed results: numbers as attributes, dicts, Arrow tables
    sweep = api["sweep"]
    assert sweep.macro_auc == sweep.test["macro_auc"]["value"]
    assert sweep.to_arrow().num_rows == len(sweep.probes) == len(a.layers(api["fs"][0]))
    assert api["compare"].to_arrow().num_rows == len(api["compare"].comparisons) > 0
    assert any(p.endswith("summary.md") for p in api["report"].paths)
    # the runs record their parameters under the options' names
    params = json.loads(a.sql("SELECT params FROM runs WHERE run_id = ?", [sweep.run_id]).column(0)[0].as_py())
    assert params["test_split"] == "val" and params["cv"] == 3 and params["boot_seed"] == 0 and "grid" in params
    ingest_params = json.loads(a.sql("SELECT params FROM runs WHERE run_id = ?", [api["ingest"].run_id]
                                     ).column(0)[0].as_py())  # fmt: skip
    assert ingest_params["label_column"] == ["oa"] and ingest_params["group_column"] == "patient_id"
    vqa_params = json.loads(a.sql("SELECT params FROM runs WHERE run_id = ?", [api["vqa"].run_id]).column(0)[0].as_py())
    assert vqa_params["shots_seed"] == 0 and "seed" not in vqa_params


def test_stored_probe_weights_read_back_give_the_stored_predictions(tmp_path: Path) -> None:
    manifest = _knee_subset(tmp_path)
    url = str(tmp_path / "s")
    medprobe.ingest(source=str(manifest), layout="csv", dataset="knee", label_column="oa", split_column="split",
                    group_column="patient_id", no_progress=True, store=url)  # fmt: skip
    ex = medprobe.extract(dataset="knee", model=OTHER, layers="-1", decode_workers=0, no_progress=True, store=url)
    fs = next(iter(ex.feature_sets.values()))
    run = medprobe.train(task="oa", feature_set=fs, test_split="val", cv=3, n_boot=20, no_progress=True, store=url)
    st = medprobe.open_store(url)
    probe = medprobe.load_probe(run.probe_id, store=st)
    assert (probe.feature_set_id, probe.layer, probe.class_names, probe.C) == (fs, run.layer, ["no", "yes"], run.C)
    stored = st.sql("SELECT image_hash, probabilities FROM predictions WHERE probe_id = ? ORDER BY image_hash",
                    [run.probe_id]).to_pylist()  # fmt: skip
    X = st.read(fs, probe.layer, [r["image_hash"] for r in stored])
    # predictions are stored as float32: the probe read back gives them to the last float32 bit
    np.testing.assert_array_equal(probe.predict_proba(X).astype(np.float32),
                                  np.array([r["probabilities"] for r in stored], dtype=np.float32))  # fmt: skip
    with pytest.raises(NotFoundError):
        medprobe.load_probe("probe-nope", store=st)
