"""The adaptive C grid: the same choice as the full grid where the CV curve has clearly turned, fewer probes, and
only training-fold rows ever fitted."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medprobe.trainer.protocol import (
    DROP_PATIENCE,
    ProtocolTiming,
    Setting,
    clearly_past_the_best,
    fit_protocol,
)
from medprobe.trainer.solvers import ProbeBatch, get_solver

GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]


def test_the_turn_rule() -> None:
    flat = [1.0, 1.0, 1.0, 1.0]
    assert not clearly_past_the_best([0.5, 0.6], [1.0, 0.9], "macro_auc")  # too few C values
    assert not clearly_past_the_best([0.5, 0.6, 0.7, 0.8], flat, "macro_auc")  # still rising
    assert clearly_past_the_best([0.5, 0.8, 0.7, 0.6], flat, "macro_auc")  # two clear drops
    assert not clearly_past_the_best([0.5, 0.8, 0.799, 0.798], flat, "macro_auc")  # a wobble, loss flat
    assert clearly_past_the_best([0.5, 0.8, 0.799, 0.798], [1.0, 0.9, 1.2, 1.5], "macro_auc")  # wobble + overfit
    assert not clearly_past_the_best([0.5, 0.8, 0.799, 0.81], [1.0, 0.9, 1.2, 1.5], "macro_auc")  # improved again
    assert clearly_past_the_best([1.0, 0.5, 0.7, 0.9], [1.0, 0.5, 0.7, 0.9], "log_loss")  # lower is better
    assert not clearly_past_the_best([0.5, 0.8, float("nan"), 0.6], flat, "macro_auc")  # undefined: keep climbing


@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.lists(st.floats(0.1, 5), min_size=8, max_size=8))
@settings(max_examples=200, deadline=None)
def test_never_stops_while_the_last_c_is_the_best(scores, losses) -> None:
    """Whatever the curve, no stop right after the best C so far."""
    scores = [*scores[:-1], max(scores)]
    assert not clearly_past_the_best(scores, losses[: len(scores)], "macro_auc")


def _problem(seed: int = 0, n: int = 600, d: int = 40):
    """Correlated features with a weak signal: small C wins and large C overfits."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    factors = rng.normal(size=(n, 8))
    factors[:, 0] += 0.5 * y
    X = factors @ rng.normal(size=(8, d)) / 3 + 0.5 * rng.normal(size=(n, d))
    groups = np.arange(n) // 2
    return X, y, groups


class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.inner = get_solver("torch", device="cpu")
        self.fits: list[tuple[list[np.ndarray], np.ndarray]] = []

    def fit_many(self, layers, y, kind, n_classes, batch: ProbeBatch, **kw):
        self.fits.append(([np.asarray(r) for r in batch.row_sets], np.asarray(batch.C)))
        return self.inner.fit_many(layers, y, kind, n_classes, batch, **kw)


@pytest.mark.parametrize("metric", ["macro_auc", "macro_f1", "log_loss"])
def test_adaptive_chooses_what_the_full_grid_chooses_with_fewer_probes(metric: str) -> None:
    X, y, groups = _problem()
    pool = np.arange(500)
    results = {}
    for grid in ("full", "adaptive"):
        timing = ProtocolTiming()
        (r,) = fit_protocol([X[pool]], y[pool], "multiclass", ["a", "b", "c"], get_solver("torch", device="cpu"),
                            groups=groups[pool], c_grid=GRID, metric=metric, grid=grid, timing=timing)  # fmt: skip
        results[grid] = (r, timing.n_probes)
    (full, n_full), (adaptive, n_adaptive) = results["full"], results["adaptive"]
    assert adaptive.C == full.C
    assert n_adaptive < n_full  # large C values were skipped
    evaluated = [float(c) for c in adaptive.cv_scores]
    assert evaluated == GRID[: len(evaluated)] and len(evaluated) >= DROP_PATIENCE + 1
    for c in adaptive.cv_scores:  # the C values both fitted have the same fold scores
        np.testing.assert_allclose(
            np.array(adaptive.cv_scores[c], dtype=float), np.array(full.cv_scores[c], dtype=float), atol=1e-6
        )
    test = np.arange(500, 600)
    np.testing.assert_allclose(adaptive.probe.predict_proba(X[test]), full.probe.predict_proba(X[test]), atol=1e-6)


def test_adaptive_fits_only_training_fold_rows_and_climbs_c() -> None:
    X, y, groups = _problem(seed=1)
    pool = np.arange(450)
    rec = _Recorder()
    results = fit_protocol([X[pool], X[pool][:, :20]], y[pool], "multiclass", ["a", "b", "c"], rec,
                           groups=groups[pool], c_grid=GRID, metric="macro_auc",
                           settings=[Setting(1.0, 0), Setting(0.5, 1)], grid="adaptive")  # fmt: skip
    selection_fits = rec.fits[:-1]  # the last solve is the refit
    assert len(selection_fits) >= 2  # a first round of the smallest C values, then one C at a time
    largest = 0.0
    for row_sets, C in selection_fits:
        assert C.min() >= largest  # C only climbs
        largest = C.max()
        for rows in row_sets:
            assert rows.max() < len(pool)  # never a row outside the training pool
            assert len(rows) < 0.9 * len(pool)  # a fold's training part: its validation rows are left out
    for r in results:
        assert len(r.cv_scores) >= DROP_PATIENCE + 1


def test_the_cli_records_which_grid_chose_c(synth_store, capsys) -> None:
    import json

    from tests.helpers.cli import run_cli

    url = synth_store.url
    args = ["train", "-t", "grade", "--feature-set", "fs-synth", "-l", "3", "-f", "json", "-s", url,
            "--c-grid", "0.0001,0.001,0.01,0.1,1,10", "--n-boot", "100", "--cv", "3"]  # fmt: skip
    for grid in ("full", "adaptive"):
        code, out, err = run_cli(capsys, *args, "--grid", grid)
        assert code == 0, err
        run_id = json.loads(out)["run_id"]
        synth_store.refresh()
        (row,) = synth_store.sql(f"SELECT metrics, cv_scores FROM probe_results WHERE run_id = '{run_id}'").to_pylist()
        assert json.loads(row["metrics"])["grid"] == grid
        n_scored = len(json.loads(row["cv_scores"]))
        assert n_scored == 6 if grid == "full" else 3 <= n_scored <= 6
    code, _, err = run_cli(capsys, *args, "--grid", "sometimes")
    assert code != 0 and "sometimes" in err


def test_fold_probes_stopped_at_the_iteration_cap_are_counted_and_warned() -> None:
    from medprobe.cli.probes import not_converged_warnings

    X, y, groups = _problem(seed=2)
    pool = np.arange(500)
    capped = get_solver("torch", device="cpu", max_iter=5)  # too few iterations for any C to converge
    (r,) = fit_protocol([X[pool]], y[pool], "multiclass", ["a", "b", "c"], capped, groups=groups[pool],
                        c_grid=[0.01, 100.0], metric="macro_auc")  # fmt: skip
    assert r.cv_not_converged == {"0.01": 5, "100.0": 5}  # every fold probe of both C values
    (done,) = fit_protocol([X[pool]], y[pool], "multiclass", ["a", "b", "c"], get_solver("torch", device="cpu"),
                           groups=groups[pool], c_grid=[0.01], metric="macro_auc")  # fmt: skip
    assert done.cv_not_converged == {}

    class _Outcome:  # the fields the warning reads
        def __init__(self, C, cv_not_converged, converged):
            self.C, self.cv_not_converged, self.layer = C, cv_not_converged, 3
            self.converged = converged

    lines = not_converged_warnings([_Outcome(100.0, {"100.0": 2}, True)])
    assert len(lines) == 1 and "2 fold probe(s) at the chosen C=100" in lines[0]
    lines = not_converged_warnings([_Outcome(0.01, {"100.0": 5}, True), _Outcome(0.1, {}, True)])
    assert len(lines) == 1 and "C=100" in lines[0] and "not chosen" in lines[0]
    assert not_converged_warnings([_Outcome(0.1, {}, True)]) == []
