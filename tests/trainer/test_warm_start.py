"""Warm starts along the C path: the same minimiser as a cold start, reached in fewer iterations; the protocol with
warm starts (and the adaptive grid, now the default) chooses the C the cold full grid chooses."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medprobe.trainer.protocol import ProtocolTiming, fit_protocol
from medprobe.trainer.solvers import ProbeBatch, get_solver
from medprobe.trainer.solvers.base import FittedProbe, mean_raw_weights

GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]


def _data(kind: str, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 6))
    X = factors @ rng.normal(size=(6, d)) + 0.7 * rng.normal(size=(n, d)) + 3.0  # correlated, off-centre
    score = factors[:, 0] + 0.5 * factors[:, 1] + 0.5 * rng.normal(size=n)
    if kind == "binary":
        return X, (score > 0).astype(int), 2
    if kind == "multiclass":
        return X, np.digitize(score, [-0.7, 0.7]), 3
    labels = np.stack([score > 0, factors[:, 2] + 0.5 * rng.normal(size=n) > 0.3], 1).astype(int)
    return X, labels, 2


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize(("n", "d"), [(300, 20), (80, 150)], ids=["rows>features", "row-span"])
def test_a_warm_start_reaches_the_cold_minimiser_in_fewer_iterations(kind: str, n: int, d: int) -> None:
    """Along a C path each warm start ends where the cold start ends; the path costs fewer iterations in all."""
    X, y, k = _data(kind, n, d)
    rows = np.arange(n)
    solver = get_solver("torch", device="cpu")
    (prev,) = solver.fit_many([X], y, kind, k, ProbeBatch.single(0.01, rows))[0]
    iters = {"cold": 0, "warm": 0}
    for C in (0.1, 1.0, 10.0):
        batch = ProbeBatch.single(C, rows)
        (cold,) = solver.fit_many([X], y, kind, k, batch)[0]
        warm_batch = ProbeBatch(batch.row_sets, batch.row_set_of, batch.C, [[prev.raw_weights()]])
        (warm,) = solver.fit_many([X], y, kind, k, warm_batch)[0]
        assert cold.converged and warm.converged
        np.testing.assert_allclose(warm.predict_proba(X), cold.predict_proba(X), atol=1e-4)
        iters["cold"] += cold.n_iter
        iters["warm"] += warm.n_iter
        prev = warm
    assert iters["warm"] < iters["cold"]


def test_raw_weights_give_the_same_decision_function() -> None:
    X, y, k = _data("multiclass", 200, 12)
    solver = get_solver("torch", device="cpu")
    (p,) = solver.fit_many([X], y, "multiclass", k, ProbeBatch.single(0.1, np.arange(200)))[0]
    coef, intercept = p.raw_weights()
    np.testing.assert_allclose(X @ coef.T + intercept, p.decision_function(X), atol=1e-9)
    twin = FittedProbe("multiclass", p.coef * 2, p.intercept * 2, p.mean, p.scale, 0.1)
    mean_coef, mean_icpt = mean_raw_weights([p, twin])
    np.testing.assert_allclose(X @ mean_coef.T + mean_icpt, 1.5 * p.decision_function(X), atol=1e-9)


def test_a_warm_start_from_other_rows_and_standardisation_still_reaches_the_minimiser() -> None:
    """The refit starts from its fold probes' mean: other rows, other means and scales, same minimiser."""
    X, y, k = _data("multiclass", 240, 30, seed=3)
    solver = get_solver("torch", device="cpu")
    folds = [np.arange(240)[np.arange(240) % 4 != f] for f in range(4)]
    fold_batch = ProbeBatch(folds, np.arange(4), np.full((1, 4), 1.0))
    fold_probes = solver.fit_many([X], y, "multiclass", k, fold_batch)[0]
    rows = np.arange(240)
    (cold,) = solver.fit_many([X], y, "multiclass", k, ProbeBatch.single(1.0, rows))[0]
    start = ProbeBatch([rows], np.zeros(1, dtype=int), np.full((1, 1), 1.0), [[mean_raw_weights(fold_probes)]])
    (warm,) = solver.fit_many([X], y, "multiclass", k, start)[0]
    np.testing.assert_allclose(warm.predict_proba(X), cold.predict_proba(X), atol=1e-4)
    assert warm.n_iter < cold.n_iter


def test_a_warm_start_of_the_wrong_shape_is_refused() -> None:
    X, y, k = _data("binary", 50, 5)
    batch = ProbeBatch([np.arange(50)], np.zeros(2, dtype=int), np.ones((1, 2)), [[None]])
    with pytest.raises(ValueError, match="warm start"):
        get_solver("torch", device="cpu").fit_many([X], y, "binary", k, batch)


def _pool_and_test(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, d = 700, 60
    y = rng.integers(0, 3, n)
    factors = rng.normal(size=(n, 10))
    factors[:, :2] += 0.4 * y[:, None]
    X = factors @ rng.normal(size=(10, d)) / 3 + 0.6 * rng.normal(size=(n, d))
    groups = np.arange(n) // 2
    return X[:560], y[:560], groups[:560], X[560:], y[560:]


@pytest.mark.parametrize("grid", ["full", "adaptive"])
@pytest.mark.parametrize("metric", ["macro_auc", "log_loss"])
def test_warm_started_selection_matches_the_cold_full_grid(grid: str, metric: str) -> None:
    Xtr, ytr, groups, Xte, yte = _pool_and_test(seed=5)
    out = {}
    for key, (g, warm) in {"cold": ("full", False), "new": (grid, True)}.items():
        timing = ProtocolTiming()
        solver = get_solver("torch", device="cpu")
        (r,) = fit_protocol([Xtr], ytr, "multiclass", ["a", "b", "c"], solver, groups=groups, c_grid=GRID,
                            metric=metric, grid=g, warm_start=warm, timing=timing)  # fmt: skip
        out[key] = (r, timing.n_probes)
    (cold, n_cold), (new, n_new) = out["cold"], out["new"]
    assert new.C == cold.C
    p_cold, p_new = cold.probe.predict_proba(Xte), new.probe.predict_proba(Xte)
    np.testing.assert_allclose(p_new, p_cold, atol=1e-2)
    auc = [roc_auc_score(yte, p, multi_class="ovr") for p in (p_cold, p_new)]
    assert abs(auc[0] - auc[1]) <= 2e-3
    for c in new.cv_scores:  # every C both fitted: the same fold scores up to the solver's tolerance
        np.testing.assert_allclose(
            np.array(new.cv_scores[c], dtype=float), np.array(cold.cv_scores[c], dtype=float), atol=2e-3
        )
    assert (n_new < n_cold) if grid == "adaptive" else (n_new == n_cold)


def test_every_selection_round_after_the_first_and_the_refit_start_warm() -> None:
    Xtr, ytr, groups, _, _ = _pool_and_test(seed=6)
    seen: list[tuple[float, bool]] = []
    inner = get_solver("torch", device="cpu")

    class Spy:
        name = "spy"

        def fit_many(self, layers, y, kind, n_classes, batch, **kw):
            has_start = batch.start is not None and all(s is not None for row in batch.start for s in row)
            seen.append((float(np.min(batch.C)), has_start))
            return inner.fit_many(layers, y, kind, n_classes, batch, **kw)

    fit_protocol([Xtr], ytr, "multiclass", ["a", "b", "c"], Spy(), groups=groups, c_grid=GRID)
    assert not seen[0][1]  # the first round (the smallest C values) starts from zero
    assert all(warm for _, warm in seen[1:])  # every later C and the refit start from a solution


def test_a_session_prepares_each_layer_and_fold_once_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside ``TorchSolver.session`` the C path's solves reuse each layer's standardisation and each fold's row-span
    basis (one QR per layer x fold instead of one per C); the probes are the same as without it."""
    import torch

    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(90, 140)), rng.integers(0, 2, 90)  # fewer rows than features: row-span blocks
    folds = [np.arange(90)[np.arange(90) % 3 != f] for f in range(3)]
    solver = get_solver("torch", device="cpu")
    qr_calls = []
    real_qr = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda A, *a, **k: qr_calls.append(1) or real_qr(A, *a, **k))

    def path() -> list[np.ndarray]:
        out = []
        for C in (0.01, 0.1, 1.0):
            batch = ProbeBatch(folds, np.arange(3), np.full((1, 3), C))
            out += [p.predict_proba(X) for p in solver.fit_many([X], y, "binary", 2, batch)[0]]
        return out

    plain = path()
    assert len(qr_calls) == 9  # 3 folds x 3 C values
    qr_calls.clear()
    with solver.session():
        cached = path()
        twin = X.copy()  # equal values, another array: never mistaken for X
        solver.fit_many([twin], y, "binary", 2, ProbeBatch(folds, np.arange(3), np.full((1, 3), 1.0)))
    assert len(qr_calls) == 3 + 3  # once per fold for X, once per fold for its twin
    for a, b in zip(plain, cached, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert solver._cache is None  # released on exit


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_the_preconditioner_reaches_the_same_minimiser_in_far_fewer_iterations(kind: str) -> None:
    """Narrow, strongly correlated features (pooled CNN channels) are ill-conditioned: plain L-BFGS needs hundreds to
    thousands of iterations at large C; preconditioned by the starting Hessian it needs tens, to the same probe
    (and to scikit-learn's)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(7)
    n = 400
    factors = rng.normal(size=(n, 3))
    X = factors @ rng.normal(size=(3, 12)) + 0.01 * rng.normal(size=(n, 12))  # 12 channels, rank ~3 + noise
    score = factors[:, 0] + 0.3 * rng.normal(size=n)
    y = {"binary": (score > 0).astype(int), "multiclass": np.digitize(score, [-0.5, 0.5])}.get(
        kind, np.stack([score > 0, factors[:, 1] > 0], 1).astype(int)
    )
    k = 3 if kind == "multiclass" else 2
    batch = ProbeBatch.single(100.0, np.arange(n))
    (plain,) = get_solver("torch", device="cpu", precondition=False, max_iter=20000).fit_many([X], y, kind, k, batch)[0]
    (pre,) = get_solver("torch", device="cpu").fit_many([X], y, kind, k, batch)[0]
    assert plain.converged and pre.converged
    assert pre.n_iter * 1.5 < plain.n_iter
    np.testing.assert_allclose(pre.predict_proba(X), plain.predict_proba(X), atol=1e-3)
    if kind != "multilabel":
        Z = StandardScaler().fit_transform(X)
        ref = LogisticRegression(C=100.0, tol=1e-10, max_iter=100000).fit(Z, y).predict_proba(Z)
        np.testing.assert_allclose(pre.predict_proba(X), ref, atol=1e-3)
