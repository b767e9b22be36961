"""Brier score and equal-mass ECE against direct computations (scikit-learn's Brier, a plain NumPy ECE)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss

from medprobe.trainer.bootstrap import metrics_with_ci
from medprobe.trainer.calibration import ECE_BINS, calibration_replicates, equal_mass_bins


def _plain_ece(confidence: np.ndarray, outcome: np.ndarray, n_bins: int = ECE_BINS) -> float:
    order = np.argsort(confidence, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, min(n_bins, len(order))):
        total += len(chunk) * abs(confidence[chunk].mean() - outcome[chunk].mean())
    return total / len(order)


def _point(y, proba, kind):
    got = calibration_replicates(np.asarray(y), np.asarray(proba), kind, np.ones((1, len(y))))
    return float(got["brier"][0]), float(got["ece"][0])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 200), seed=st.integers(0, 10_000))
def test_binary_brier_and_ece_equal_direct_computations(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p1 = rng.random(n)
    y = (rng.random(n) < p1 ** 2).astype(int)  # miscalibrated on purpose
    brier, ece = _point(y, np.stack([1 - p1, p1], 1), "binary")
    assert brier == pytest.approx(brier_score_loss(y, p1), abs=1e-12)
    assert ece == pytest.approx(_plain_ece(p1, y.astype(float)), abs=1e-12)


def test_multiclass_uses_the_multiclass_brier_and_top_label_ece() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(97, 4))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, 97)
    brier, ece = _point(y, proba, "multiclass")
    onehot = np.eye(4)[y]
    assert brier == pytest.approx(((proba - onehot) ** 2).sum(1).mean(), abs=1e-12)
    assert ece == pytest.approx(_plain_ece(proba.max(1), (proba.argmax(1) == y).astype(float)), abs=1e-12)


def test_multilabel_averages_the_findings() -> None:
    rng = np.random.default_rng(2)
    proba = rng.random((60, 3))
    y = (rng.random((60, 3)) < 0.4).astype(int)
    brier, ece = _point(y, proba, "multilabel")
    assert brier == pytest.approx(np.mean([brier_score_loss(y[:, k], proba[:, k]) for k in range(3)]), abs=1e-12)
    assert ece == pytest.approx(np.mean([_plain_ece(proba[:, k], y[:, k].astype(float)) for k in range(3)]), abs=1e-12)


def test_equal_mass_bins_hold_equal_counts() -> None:
    bins = equal_mass_bins(np.random.default_rng(0).random(25))
    assert np.bincount(bins).tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]


def test_every_result_carries_calibration_with_a_ci() -> None:
    rng = np.random.default_rng(3)
    p1 = rng.random(120)
    y = (rng.random(120) < p1).astype(int)
    out = metrics_with_ci(y, np.stack([1 - p1, p1], 1), "binary", ["no", "yes"], n_boot=200, seed=0)
    assert out["ece_bins"] == ECE_BINS
    for name in ("brier", "ece"):
        entry = out[name]
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert out["brier"]["value"] == pytest.approx(brier_score_loss(y, p1), abs=1e-12)


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    from medprobe.trainer.calibration import fit_temperature, with_temperature

    rng = np.random.default_rng(4)
    z = rng.normal(size=(6000, 3)) * 1.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    sharp = np.exp(2 * z) / np.exp(2 * z).sum(1, keepdims=True)  # overconfident: logits doubled
    assert fit_temperature(y, sharp, "multiclass") == pytest.approx(2.0, rel=0.08)
    np.testing.assert_allclose(with_temperature(p, "multiclass", 1.0), p, atol=1e-9)
    q = rng.random((50, 2))
    np.testing.assert_allclose(with_temperature(q, "multilabel", 1.0), q, atol=1e-9)


def test_train_reports_metrics_after_a_temperature_fitted_out_of_fold(synth_store) -> None:
    import medprobe

    run = medprobe.train(task="severe", feature_set="fs-synth", layers="3", cv=3, c_grid="10", n_boot=50,
                         calibrate="temperature", no_progress=True, store=synth_store)  # fmt: skip
    after = run.test["calibrated"]
    assert after["method"] == "temperature" and after["temperature"] > 0 and "out-of-fold" in after["fitted_on"]
    assert after["macro_auc"]["value"] == pytest.approx(run.test["macro_auc"]["value"], abs=1e-12)  # ranks kept
    assert {"brier", "ece"} <= set(after)
