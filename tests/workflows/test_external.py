"""External test sets: the probe fitted (C and layer chosen) on the training dataset only, scored once on another
dataset; equal to scikit-learn fitted on the training rows with the same C; bad external datasets refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

import medprobe
from medprobe.errors import InvalidInputError
from tests.helpers.cli import run_cli
from tests.helpers.datasets_copy import copy_dataset


def test_an_external_dataset_is_scored_by_the_probe_fitted_on_the_training_dataset(synth_store, capsys) -> None:
    external = copy_dataset(synth_store, "site2", ("test",))  # unseen images: the synth test rows, elsewhere
    run = medprobe.sweep(task="grade", dataset="synth", feature_set="fs-synth", layers="1,3", cv=3, c_grid="0.1,1",
                         n_boot=50, test_dataset="site2", no_progress=True, store=synth_store)  # fmt: skip
    (ext,) = run.external
    assert ext["dataset"] == "site2" and ext["applied_from"] == run.probe_id and ext["layer"] == run.layer
    assert ext["n_predicted"] == ext["n_labelled"] == len(external) and ext["n_overlap"] == 0
    # the same images as the in-dataset test rows: the same probe gives the same numbers
    assert ext["metrics"]["macro_auc"] == run.test["macro_auc"]
    # and scikit-learn fitted on the training rows with the chosen C, scored on the external images
    pool = synth_store.sql("SELECT image_hash, labels FROM dataset_images WHERE dataset = 'synth' AND split IN "
                           "('train', 'val') ORDER BY image_hash").to_pylist()  # fmt: skip
    names = ["none", "mild", "severe"]

    def y_of(rows: list[dict]) -> np.ndarray:
        return np.array([names.index(str(json.loads(r["labels"])["grade"])) if str(json.loads(r["labels"])["grade"])
                         in names else int(json.loads(r["labels"])["grade"]) for r in rows])  # fmt: skip

    X = synth_store.read("fs-synth", run.layer, [r["image_hash"] for r in pool]).astype(np.float64)
    scaler = StandardScaler().fit(X)
    ref = LogisticRegression(C=run.C, max_iter=10_000, tol=1e-10).fit(scaler.transform(X), y_of(pool))
    Xe = synth_store.read("fs-synth", run.layer, [r["image_hash"] for r in external]).astype(np.float64)
    expected = roc_auc_score(y_of(external), ref.predict_proba(scaler.transform(Xe)), multi_class="ovr")
    assert ext["metrics"]["macro_auc"]["value"] == pytest.approx(expected, abs=2e-3)
    stored = synth_store.sql("SELECT dataset, applied_from, n_test FROM probe_results WHERE probe_id = ?",
                             [ext["probe_id"]]).to_pylist()  # fmt: skip
    assert stored == [{"dataset": "site2", "applied_from": run.probe_id, "n_test": len(external)}]
    assert "operating_points" in ext["metrics"] and "brier" in ext["metrics"]


def test_bad_external_datasets_are_refused(synth_store, capsys) -> None:
    args = ["sweep", "-t", "grade", "-d", "synth", "--feature-set", "fs-synth", "-l", "3", "--cv", "3", "--c-grid",
            "0.1", "--n-boot", "20", "-s", synth_store.url, "--no-progress"]  # fmt: skip
    copy_dataset(synth_store, "no-task", ("test",), task="other")
    code, _, err = run_cli(capsys, *args, "--test-dataset", "no-task")
    assert code == 3 and "has no task 'grade' (its tasks: other)" in err
    copy_dataset(synth_store, "renamed", ("test",), classes=["0", "1", "2"])
    code, _, err = run_cli(capsys, *args, "--test-dataset", "renamed")
    assert code == 3 and "['none', 'mild', 'severe'] in 'synth' but ['0', '1', '2']" in err
    overlapping = copy_dataset(synth_store, "overlap", ("train", "test"))
    code, _, err = run_cli(capsys, *args, "--test-dataset", "overlap")
    n_train = sum(r["split"] == "train" for r in overlapping)
    assert code == 3 and f"{n_train} image(s) of --test-dataset 'overlap' are training images" in err
    code, out, err = run_cli(capsys, *args, "--test-dataset", "overlap", "--allow-overlap", "-f", "json")
    assert code == 0 and json.loads(out)["external"][0]["n_overlap"] == n_train, err
    code, _, err = run_cli(capsys, *args, "--test-dataset", "synth")
    assert code == 3 and "is the training dataset" in err
    with pytest.raises(InvalidInputError):
        medprobe.train(task="grade", dataset="synth", feature_set="fs-synth", test_dataset="renamed", cv=3,
                       c_grid="0.1", n_boot=20, no_progress=True, store=synth_store)  # fmt: skip


def test_compare_scores_each_probe_on_the_external_dataset(synth_store, capsys) -> None:
    from tests.helpers.features import fill_store

    fill_store(synth_store, fs_id="fs-other", seed=0, offset=0.5)
    copy_dataset(synth_store, "site2", ("test",))
    code, out, err = run_cli(capsys, "compare", "-t", "grade", "-d", "synth", "--feature-set", "fs-synth,fs-other",
                             "-l", "3,1", "--cv", "3", "--c-grid", "0.1,1", "--n-boot", "30", "--test-dataset",
                             "site2", "-f", "json", "-s", synth_store.url, "--no-progress")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)["comparisons"]
    assert {r["dataset"] for r in rows} == {"synth", "site2"}
    inside = {r["metric"]: r["diff"] for r in rows if r["dataset"] == "synth"}
    outside = {r["metric"]: r["diff"] for r in rows if r["dataset"] == "site2"}
    assert inside == pytest.approx(outside)  # the same images in both: the same paired differences


def test_subgroups_are_scored_on_the_external_dataset_with_the_training_bins(synth_store) -> None:
    from medprobe.schemas import DatasetImageRow, DatasetRow, TaskRow
    from tests.trainer.test_subgroups import _add_metadata

    _add_metadata(synth_store)
    rows = copy_dataset(synth_store, "site2", ("test",))  # the same test images (and their metadata), elsewhere
    women = [r for r in rows if json.loads(r["metadata"])["sex"] == "F"]  # a site that saw one sex only
    synth_store.append("datasets", [DatasetRow(dataset="site3", format="csv", source="site3", split_policy="shipped")])
    synth_store.append("tasks", [TaskRow(dataset="site3", task="grade", type="multiclass", label_columns=["grade"],
                                         class_names=["none", "mild", "severe"], primary_metric="macro_auc")])
    synth_store.append("dataset_images", [DatasetImageRow(**{**{k: v for k, v in r.items() if k not in (
        "ingested_at", "source")}, "dataset": "site3"}) for r in women])  # fmt: skip
    run = medprobe.train(task="grade", dataset="synth", feature_set="fs-synth", layers="3", cv=3, c_grid="0.1,1",
                         n_boot=50, subgroup="sex,age:3", test_dataset="site2,site3", no_progress=True,
                         store=synth_store)  # fmt: skip
    same, one_sex = run.external
    assert same["metrics"]["subgroups"] == run.test["subgroups"]  # same rows, the training bins, the same CIs
    sex, age = one_sex["metrics"]["subgroups"]
    assert "undefined" in sex and "1 group(s)" in sex["undefined"]  # recorded with its reason, not dropped
    assert "undefined" in age and "fewer than 20 test rows" in age["undefined"]  # too few per training-row bin
