"""The batched torch solver against scikit-learn on the same standardised features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medprobe.errors import MedprobeError
from medprobe.trainer.solvers import LogisticProbe, ProbeBatch, get_solver


def _data(kind: str, n: int = 600, d: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.2, 5, d) + rng.normal(size=d) * 10  # unscaled, off-centre
    Z = (X - X.mean(0)) / X.std(0)
    W = rng.normal(size=(d, 4)) * 2 / np.sqrt(d)
    L = Z @ W
    if kind == "binary":
        y = (L[:, 0] + rng.logistic(size=n) > 0).astype(int)
    elif kind == "multiclass":
        y = np.argmax(L + rng.gumbel(size=L.shape), 1)
    else:
        y = (L[:, :3] + rng.logistic(size=(n, 3)) > 0.3).astype(int)
    return X.astype(np.float32), y


def _macro_auc(y, p, kind):
    if kind == "binary":
        return roc_auc_score(y, p[:, 1])
    if kind == "multiclass":
        return np.mean([roc_auc_score(y == k, p[:, k]) for k in range(p.shape[1])])
    return np.mean([roc_auc_score(y[:, k], p[:, k]) for k in range(p.shape[1])])


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("C", [0.01, 1.0])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_torch_matches_sklearn(kind, C, class_weight):
    X, y = _data(kind)
    tr, te = slice(0, 450), slice(450, None)
    ours = LogisticProbe(C, class_weight=class_weight, device="cpu", dtype=torch.float32).fit(X[tr], y[tr])
    ref = LogisticProbe(C, solver="sklearn", class_weight=class_weight, tol=1e-10, max_iter=10000).fit(X[tr], y[tr])
    p, q = ours.predict_proba(X[te]), ref.predict_proba(X[te])
    assert ours.converged_
    assert np.abs(p - q).max() < 1e-2
    assert abs(_macro_auc(y[te], p, kind) - _macro_auc(y[te], q, kind)) < 2e-3
    assert (
        ours.coef_.shape
        == ref.coef_.shape
        == ((1 if kind == "binary" else y.max() + 1 if kind == "multiclass" else 3), X.shape[1])
    )


def test_objective_is_sklearns_on_standardised_features():
    """Same minimiser: the weights (standardised units) agree, intercepts too."""
    X, y = _data("binary", n=400, d=10)
    ours = LogisticProbe(0.5, device="cpu").fit(X, y)
    ref = LogisticProbe(0.5, solver="sklearn", tol=1e-10, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-3)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=2e-3)
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_batched_equals_independent_fits(kind):
    X, y = _data(kind, n=300, d=16)
    rng = np.random.default_rng(1)
    layers = [X, X * 3 + rng.normal(size=X.shape).astype(np.float32)]
    n_out = {"binary": 2, "multiclass": int(y.max()) + 1, "multilabel": 3}[kind]
    folds = [np.flatnonzero(np.arange(300) % 3 != k) for k in range(3)]
    Cs = [0.01, 0.1, 1.0]
    batch = ProbeBatch(folds, np.repeat(np.arange(3), 3), np.tile(np.tile(Cs, 3), (2, 1)))
    solver = get_solver("torch", device="cpu")
    together = solver.fit_many(layers, y, kind, n_out, batch)
    for g in range(2):
        for m in range(9):
            alone = solver.fit_many([layers[g]], y, kind, n_out, ProbeBatch.single(Cs[m % 3], folds[m // 3]))[0][0]
            diff = np.abs(alone.predict_proba(layers[g]) - together[g][m].predict_proba(layers[g])).max()
            assert diff < 1e-2, (g, m, diff)
            assert together[g][m].converged


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_fewer_rows_than_features_matches_sklearn(kind):
    """n < d: the probe is solved in the span of its training rows; weights come back in all d features."""
    X, y = _data(kind, n=160, d=300, seed=3)
    tr, te = slice(0, 100), slice(100, None)
    ours = LogisticProbe(0.05, device="cpu").fit(X[tr], y[tr])
    ref = LogisticProbe(0.05, solver="sklearn", tol=1e-10, max_iter=10000).fit(X[tr], y[tr])
    p, q = ours.predict_proba(X[te]), ref.predict_proba(X[te])
    assert ours.converged_ and ours.probe_.extra["row_span"]
    assert ours.coef_.shape == ref.coef_.shape
    assert np.abs(p - q).max() < 1e-2
    assert abs(_macro_auc(y[te], p, kind) - _macro_auc(y[te], q, kind)) < 2e-3
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-3)


@pytest.mark.parametrize("wide", [150, 60])
def test_layers_of_different_widths_in_one_batch_equal_independent_fits(wide):
    """Layers of two widths in one call. wide=150: more features than any fold's rows, so the solve runs in
    row-span blocks; wide=60: fewer, so each width is one full-feature solve."""
    X, y = _data("multiclass", n=120, d=wide, seed=4)
    layers = [X[:, :12], X]
    folds = [np.flatnonzero(np.arange(120) % 4 != k) for k in range(4)] + [np.arange(120)]
    Cs = [0.01, 1.0]
    batch = ProbeBatch(folds, np.repeat(np.arange(5), 2), np.tile(np.tile(Cs, 5), (2, 1)))
    solver = get_solver("torch", device="cpu")
    K = int(y.max()) + 1
    together = solver.fit_many(layers, y, "multiclass", K, batch)
    for g, Xg in enumerate(layers):
        for m in range(10):
            probe = together[g][m]
            assert probe.coef.shape == (K, Xg.shape[1]) and probe.mean.shape == (Xg.shape[1],)
            assert probe.extra["row_span"] == (g == 1 and wide > 120)  # 90 or 120 training rows
            alone = solver.fit_many([Xg], y, "multiclass", K, ProbeBatch.single(Cs[m % 2], folds[m // 2]))[0][0]
            ref = LogisticProbe(Cs[m % 2], solver="sklearn", tol=1e-10, max_iter=10000).fit(
                Xg[folds[m // 2]], y[folds[m // 2]]
            )
            assert np.abs(alone.predict_proba(Xg) - probe.predict_proba(Xg)).max() < 1e-2, (g, m)
            assert np.abs(ref.predict_proba(Xg) - probe.predict_proba(Xg)).max() < 1e-2, (g, m)
            assert probe.converged


def test_fold_statistics_come_from_training_rows_only():
    X, y = _data("binary", n=200, d=5)
    rows = np.arange(100)
    probe = get_solver("torch", device="cpu").fit_many([X], y, "binary", 2, ProbeBatch.single(1.0, rows))[0][0]
    np.testing.assert_allclose(probe.mean, X[rows].astype(np.float64).mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(probe.scale, X[rows].astype(np.float64).std(0), rtol=1e-4)


def test_constant_feature_gets_zero_weight():
    X, y = _data("binary", n=200, d=5)
    X[:, 2] = 7.0
    probe = LogisticProbe(1.0, device="cpu").fit(X, y)
    assert abs(probe.coef_[0, 2]) < 1e-6
    assert probe.scale_[2] == 1.0


def test_cuml_missing_says_how_to_install():
    try:
        import cuml  # noqa: F401

        pytest.skip("cuML is installed here")
    except ImportError:
        pass
    with pytest.raises(MedprobeError, match=r"pip install medprobe\[cuml\]"):
        get_solver("cuml")


def test_unknown_solver_is_named():
    with pytest.raises(MedprobeError, match="torch, sklearn, cuml"):
        get_solver("adam")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_sklearn():
    X, y = _data("multiclass")
    ours = LogisticProbe(0.1, device="cuda").fit(X, y)
    ref = LogisticProbe(0.1, solver="sklearn", tol=1e-10, max_iter=10000).fit(X, y)
    assert np.abs(ours.predict_proba(X) - ref.predict_proba(X)).max() < 1e-2
