"""Metrics, vectorised bootstrap and paired comparison."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medprobe.trainer.bootstrap import (
    metrics_with_ci,
    multiplicities,
    paired_comparison,
    replicate_metrics,
    weighted_auc,
)
from medprobe.trainer.metrics import UndefinedMetricWarning, point_metrics


@pytest.mark.parametrize("kind,K", [("binary", 2), ("multiclass", 4), ("multilabel", 3)])
def test_unit_weights_reproduce_sklearn(kind, K):
    rng = np.random.default_rng(0)
    n = 300
    if kind == "multilabel":
        y = (rng.random((n, K)) < 0.4).astype(int)
        p = np.round(np.clip(0.3 * y + 0.7 * rng.random((n, K)), 0, 1), 2)  # with ties
    else:
        y = rng.integers(0, K, n)
        z = rng.normal(size=(n, K))
        z[np.arange(n), y] += 1
        p = np.round(np.exp(z) / np.exp(z).sum(1, keepdims=True), 2)
    names = [str(k) for k in range(K)]
    point = point_metrics(y, p, kind, names)
    reps = replicate_metrics(y, p, kind, K, np.ones((1, n)))
    for m, v in point.values.items():
        assert reps[m][0] == pytest.approx(v, abs=1e-12), m


def test_weighted_auc_equals_sklearn_on_a_resample():
    rng = np.random.default_rng(1)
    s, t = np.round(rng.random(200), 1), rng.random(200) < 0.3
    W = multiplicities(200, 5, seed=3)
    idx = np.repeat(np.arange(200), W[2].astype(int))
    assert weighted_auc(s, t, W)[2] == pytest.approx(roc_auc_score(t[idx], s[idx]), abs=1e-12)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    p = np.column_stack([1 - rng.random(100), rng.random(100)])
    a = metrics_with_ci(y, p, "binary", ["a", "b"], seed=5)
    b = metrics_with_ci(y, p, "binary", ["a", "b"], seed=5)
    assert a == b


def test_ci_coverage_near_nominal():
    """Simulated scores with a known population AUC: the 95% CI covers it about 95% of the time."""
    rng = np.random.default_rng(42)
    true_auc = 0.7602  # Phi(1/sqrt(2)) for N(1,1) vs N(0,1) scores
    covered, trials = 0, 200
    for i in range(trials):
        y = rng.integers(0, 2, 150)
        s = rng.normal(size=150) + y
        p1 = 1 / (1 + np.exp(-s))
        m = metrics_with_ci(y, np.column_stack([1 - p1, p1]), "binary", ["neg", "pos"], n_boot=400, seed=i)
        covered += m["macro_auc"]["ci_low"] <= true_auc <= m["macro_auc"]["ci_high"]
    assert 0.88 <= covered / trials <= 0.99


def test_single_class_test_set_gives_none_with_reason():
    y = np.zeros(20, dtype=int)
    p = np.column_stack([np.linspace(0.2, 0.9, 20), np.linspace(0.8, 0.1, 20)])
    with pytest.warns(UndefinedMetricWarning, match="AUC undefined"):
        m = metrics_with_ci(y, p, "binary", ["neg", "pos"], n_boot=50)
    assert m["macro_auc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert "macro_auc" in m["undefined"]
    assert m["accuracy"]["value"] is not None


def test_paired_comparison_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=400))))
    bad = 1 / (1 + np.exp(-(0.3 * (2 * y - 1) + rng.normal(size=400))))
    pa, pb = np.column_stack([1 - good, good]), np.column_stack([1 - bad, bad])
    res = paired_comparison(y, pa, pb, "binary", ["n", "p"])["macro_auc"]
    assert res.diff > 0 and res.ci_low > 0 and res.p_bootstrap < 0.01
    same = paired_comparison(y, pa, pa, "binary", ["n", "p"])["macro_auc"]
    assert same.diff == 0 and same.p_bootstrap == 1.0 and same.p_ttest == 1.0
