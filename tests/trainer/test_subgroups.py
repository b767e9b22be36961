"""Subgroups: per-group metrics equal direct scikit-learn computations on the group's test rows, numeric bins come
from the training rows, small groups are flagged, and bad columns are refused before anything is fitted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import medprobe
from medprobe.errors import InvalidInputError
from medprobe.schemas import DatasetImageRow
from tests.helpers.cli import run_cli


def _add_metadata(store) -> dict[str, dict]:
    rows = store.sql("SELECT * FROM dataset_images WHERE dataset = 'synth' ORDER BY image_hash").to_pylist()
    rng = np.random.default_rng(0)
    meta = {}
    test_seen = 0
    for i, row in enumerate(rows):
        m = {"sex": "F" if i % 2 else "M", "age": int(rng.integers(20, 90)), "site": "A", "id": i}
        if row["split"] == "test":
            test_seen += 1
            if test_seen <= 5:
                m["sex"] = "X"  # a rare value: flagged, not scored
        meta[row["image_hash"]] = m
    fields = [{k: v for k, v in r.items() if k != "ingested_at"} for r in rows]
    store.append("dataset_images", [DatasetImageRow(**{**f, "metadata": json.dumps(meta[f["image_hash"]])})
                                    for f in fields])  # fmt: skip
    return meta


def test_subgroup_metrics_equal_direct_computations(synth_store) -> None:
    meta = _add_metadata(synth_store)
    run = medprobe.train(task="grade", feature_set="fs-synth", layers="3", cv=3, c_grid="0.1,1", n_boot=100,
                         subgroup="sex,age:3", no_progress=True, store=synth_store)  # fmt: skip
    sex, age = run.test["subgroups"]
    preds = synth_store.sql("SELECT image_hash, y_true, probabilities FROM predictions WHERE probe_id = ?",
                            [run.probe_id]).to_pylist()  # fmt: skip
    by = {g["group"]: g for g in sex["groups"]}
    assert by["X"]["n"] == 5 and "flagged" in by["X"]
    for name in ("F", "M"):
        rows = [p for p in preds if meta[p["image_hash"]]["sex"] == name]
        y = [int(p["y_true"]) for p in rows]
        expected = roc_auc_score(y, np.array([p["probabilities"] for p in rows]), multi_class="ovr")
        assert by[name]["n"] == len(rows) and by[name]["macro_auc"]["value"] == pytest.approx(expected, abs=1e-6)
    gap = sex["largest_gap"]
    values = {g: by[g]["macro_auc"]["value"] for g in ("F", "M")}
    assert gap["value"] == pytest.approx(max(values.values()) - min(values.values()))
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
    # the age bins sit at the tertiles of the training rows' ages (never the test rows')
    pool = synth_store.sql("SELECT image_hash FROM dataset_images WHERE split IN ('train', 'val')").column(0)
    ages = np.array([meta[h]["age"] for h in pool.to_pylist()], dtype=float)
    assert age["edges"] == pytest.approx(np.quantile(ages, [1 / 3, 2 / 3]).tolist())
    assert sum(g["n"] for g in age["groups"]) == len(preds)


def test_bad_subgroups_are_refused_before_fitting(synth_store, capsys) -> None:
    _add_metadata(synth_store)
    args = ["train", "-t", "grade", "--feature-set", "fs-synth", "-s", synth_store.url]
    for value, why in (("weight", "no such metadata column; the dataset has: age, id, sex, site"),
                       ("site", "hold 1 group(s)"), ("id:0", "at least 2"), ("sex:4", "not numeric"),
                       ("id:200", "every group of 'id' has fewer than 20 test rows")):  # fmt: skip
        code, _, err = run_cli(capsys, *args, "--subgroup", value)
        assert code == 3 and why in err, (value, err)
    with pytest.raises(InvalidInputError, match="no such metadata column"):
        medprobe.train(task="grade", feature_set="fs-synth", subgroup="weight", store=synth_store)
