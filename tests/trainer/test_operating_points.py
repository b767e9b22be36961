"""Operating points against direct computations (scikit-learn's roc_curve and confusion_matrix), thresholds chosen
on out-of-fold training rows only (indices, and test labels that change nothing), and bad rules refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_curve

import medprobe
from medprobe.errors import InvalidInputError
from medprobe.schemas import DatasetImageRow
from medprobe.trainer.operating_points import Rule, choose_threshold, parse_rules, rates_under_weights
from medprobe.trainer.protocol import fit_protocol
from medprobe.trainer.solvers import get_solver
from tests.helpers.cli import run_cli


def _data(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.35).astype(int)
    scores = 1 / (1 + np.exp(-(1.2 * truth + rng.normal(size=n))))
    return truth, np.round(scores, 2)  # rounded: tied scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thresholds_equal_direct_roc_computations(seed: int) -> None:
    truth, scores = _data(seed)
    fpr, tpr, th = roc_curve(truth, scores, drop_intermediate=False)
    th, fpr, tpr = th[1:], fpr[1:], tpr[1:]  # the first threshold is +inf
    youden = choose_threshold(truth, scores, Rule("youden"))
    best = max(tpr - fpr)
    assert youden == min(t for t, a, b in zip(th, tpr, fpr, strict=True) if a - b == best)
    sens = choose_threshold(truth, scores, Rule("sens", 0.9))
    assert sens == max(t for t, a in zip(th, tpr, strict=True) if a >= 0.9)
    spec = choose_threshold(truth, scores, Rule("spec", 0.9))
    assert spec == min(t for t, b in zip(th, fpr, strict=True) if 1 - b >= 0.9)
    # at each threshold the point rates equal a confusion matrix of score >= threshold
    for t in (youden, sens, spec):
        tn, fp, fn, tp = confusion_matrix(truth, scores >= t, labels=[0, 1]).ravel()
        got = {k: float(v[0]) for k, v in rates_under_weights(truth, scores >= t, np.ones((1, len(truth)))).items()}
        assert got == pytest.approx({"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
                                     "ppv": tp / (tp + fp), "npv": tn / (tn + fn),
                                     "f1": 2 * tp / (2 * tp + fp + fn)}, abs=1e-12)  # fmt: skip


def test_out_of_fold_rows_are_every_training_row_once() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    X = rng.normal(size=(120, 5)) + y[:, None]
    (result,) = fit_protocol([X], y, "binary", ["no", "yes"], get_solver("sklearn"), c_grid=[0.1, 1.0], n_splits=4)
    assert sorted(result.oof_rows.tolist()) == list(range(120))
    assert result.oof_proba.shape == (120, 2)


def test_test_labels_never_move_a_threshold(synth_store, capsys) -> None:
    args = dict(task="severe", feature_set="fs-synth", layers="2", cv=3, c_grid="0.1,1", n_boot=50,
                operating_points="youden,sens=0.8,spec=0.8", no_progress=True, store=synth_store)  # fmt: skip
    first = medprobe.train(**args)
    ops = first.test["operating_points"]["yes"]
    assert [p["rule"] for p in ops] == ["youden", "sens=0.8", "spec=0.8"]
    assert all(p["n_oof"] == first.outcomes[0].n_train for p in ops)  # every training row, out of fold
    assert all(p["sensitivity"]["ci_low"] <= p["sensitivity"]["value"] <= p["sensitivity"]["ci_high"] for p in ops)
    test_rows = synth_store.sql("SELECT * FROM dataset_images WHERE split = 'test'").to_pylist()
    flipped = []
    for row in test_rows:  # every test label changed (the latest membership row wins): no threshold may move
        labels = json.loads(row["labels"])
        labels["severe"] = "no" if labels["severe"] == "yes" else "yes"
        fields = {k: v for k, v in row.items() if k != "ingested_at"}
        flipped.append(DatasetImageRow(**{**fields, "labels": json.dumps(labels)}))
    synth_store.append("dataset_images", flipped)
    second = medprobe.train(**args)
    again = second.test["operating_points"]["yes"]
    assert [p["threshold"] for p in again] == [p["threshold"] for p in ops]
    assert second.test["macro_auc"]["value"] != first.test["macro_auc"]["value"]


def test_bad_rules_are_refused(synth_store, capsys) -> None:
    for bad, why in (("sens=1.2", "strictly between 0 and 1"), ("spec=0", "strictly between 0 and 1"),
                     ("ppv=0.9", "use youden, sens=S or spec=S"), ("youden,youden", "given twice")):  # fmt: skip
        with pytest.raises(InvalidInputError, match=why):
            parse_rules(bad.split(","))
    code, _, err = run_cli(capsys, "train", "-t", "severe", "--feature-set", "fs-synth", "--operating-points",
                           "sens=1.5", "-s", synth_store.url)  # fmt: skip
    assert code == 3 and "strictly between 0 and 1" in err


def test_knn_results_get_operating_points_from_their_out_of_fold_neighbours(synth_store) -> None:
    run = medprobe.train(task="severe", feature_set="fs-synth", layers="3", method="knn", k="5,10", cv=3, n_boot=50,
                         calibrate="temperature", no_progress=True, store=synth_store)  # fmt: skip
    ops = run.test["operating_points"]["yes"]
    assert [p["rule"] for p in ops] == ["youden", "sens=0.9", "spec=0.9"]
    assert all(p["n_oof"] == run.outcomes[0].n_train for p in ops)  # every training row once, out of fold
    assert run.test["calibrated"]["temperature"] > 0
