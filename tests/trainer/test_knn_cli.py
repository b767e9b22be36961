"""``train/sweep --method knn``: k chosen on training rows only, rows in probe_results beside the probes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from medprobe.featurestore import FeatureStore
from medprobe.trainer import knn as knn_module
from medprobe.trainer.knn import DINOV2_TEMPERATURE
from tests.helpers.cli import run_cli

FAST = ["--n-boot", "200", "--cv", "3"]


def _labels(store: FeatureStore, hashes: list[str]) -> np.ndarray:
    names = ["none", "mild", "severe"]
    rows = store.sql("SELECT image_hash, labels FROM dataset_images").to_pylist()
    by_hash = {r["image_hash"]: names.index(json.loads(r["labels"])["grade"]) for r in rows}
    return np.array([by_hash[h] for h in hashes])


def test_knn_train_equals_sklearn_and_never_selects_on_test(synth_store, capsys, monkeypatch):
    store = synth_store
    seen: list[np.ndarray] = []
    real = knn_module.choose_k

    def spy(X, *args, **kwargs):  # every row k selection sees
        seen.append(np.asarray(X))
        return real(X, *args, **kwargs)

    monkeypatch.setattr("medprobe.trainer.knn_protocol.choose_k", spy)
    code, out, err = run_cli(capsys, "train", "--task", "grade", "--feature-set", "fs-synth", "-l", "3", "--method",
                             "knn", "--k", "5,15,40", "-f", "json", "--store", store.url, *FAST)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    probe = doc["probes"][0]
    assert doc["method"] == "knn" and probe["k"] in (5, 15, 40) and doc["C"] is None
    assert probe["selection"] == "cv:3:grouped" and probe["cv_mean"] is not None
    res = store.sql("SELECT * FROM probe_results WHERE run_id = ?", [doc["run_id"]]).to_pylist()[0]
    assert res["method"] == "knn" and res["k"] == probe["k"] and res["c"] is None and res["weights_uri"] is None
    assert json.loads(res["metrics"])["label_precision_at_k"]["k"] == probe["k"]
    # k selection saw training rows only: no test row's features reach choose_k
    members = store.sql("SELECT image_hash, split FROM dataset_images").to_pylist()
    test_hashes = sorted(r["image_hash"] for r in members if r["split"] == "test")
    train_hashes = sorted(r["image_hash"] for r in members if r["split"] != "test")
    X_test = store.read("fs-synth", 3, test_hashes).astype(np.float64)
    X_train = store.read("fs-synth", 3, train_hashes).astype(np.float64)
    assert seen and all(len(x) == len(train_hashes) for x in seen)
    for x in seen:
        assert not (np.abs(x[:, None, :] - X_test[None, :, :]).sum(2) < 1e-9).any()
    # the stored probabilities equal scikit-learn's KNeighborsClassifier with the same weighting
    preds = store.sql("SELECT image_hash, probabilities FROM predictions WHERE probe_id = ? ORDER BY image_hash",
                      [res["probe_id"]]).to_pylist()  # fmt: skip
    k = res["k"]
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                               weights=lambda d: np.exp((1.0 - d) / DINOV2_TEMPERATURE))  # fmt: skip
    clf.fit(X_train, _labels(store, train_hashes))
    expected = clf.predict_proba(store.read("fs-synth", 3, [p["image_hash"] for p in preds]).astype(np.float64))
    np.testing.assert_allclose(np.array([p["probabilities"] for p in preds]), expected, atol=1e-5)


def test_knn_sweep_and_report_show_methods_side_by_side(synth_store, capsys, tmp_path):
    url = synth_store.url
    runs = []
    for method in ("probe", "knn"):
        extra = ["--c-grid", "0.01,0.1"] if method == "probe" else ["--k", "10,20"]
        code, out, err = run_cli(capsys, "sweep", "--task", "grade", "--feature-set", "fs-synth", "--method",
                                 method, "-f", "json", "--store", url, *FAST, *extra)  # fmt: skip
        assert code == 0, err
        runs.append(json.loads(out)["run_id"])
    rows = synth_store.sql("SELECT method, count(*) AS n FROM probe_results GROUP BY 1 ORDER BY 1").to_pylist()
    assert rows == [{"method": "knn", "n": 4}, {"method": "probe", "n": 4}]
    code, out, err = run_cli(capsys, "report", *runs, "--out", str(tmp_path / "rep"), "--store", url)
    assert code == 0, err
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "| knn |" in summary and "| probe |" in summary and "k=" in summary
    assert (tmp_path / "rep" / "layer_curve.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "knn", "--k", "100000"], "choose k from 1 to"),
        (["--k", "5"], "--k is for --method knn"),
        (["--method", "knn", "--k", "0"], "positive integers"),
    ],
)
def test_knn_bad_k(synth_store, capsys, args, message):
    code, _, err = run_cli(capsys, "train", "--task", "grade", "--feature-set", "fs-synth", "--store",
                           synth_store.url, *args, *FAST)  # fmt: skip
    assert code != 0 and message in err


def test_compare_with_knn_pairs_two_feature_sets(synth_store, capsys):
    from tests.helpers.features import fill_store

    fill_store(synth_store, fs_id="fs-noise", model_id="synthetic/noise", seed=7)
    args = ["-t", "grade", "--feature-set", "fs-synth,fs-noise", "-l", "-1,-1", "--method", "knn", "--k", "10"]
    code, out, err = run_cli(capsys, "compare", *args, "-f", "json", "--store", synth_store.url, *FAST)
    assert code == 0, err
    doc = json.loads(out)
    auc = next(c for c in doc["comparisons"] if c["metric"] == "macro_auc")
    assert auc["diff"] == pytest.approx(auc["value_a"] - auc["value_b"]) and auc["ci_low"] <= auc["diff"]
    methods = synth_store.sql("SELECT DISTINCT method, k FROM probe_results").to_pylist()
    assert methods == [{"method": "knn", "k": 10}]
