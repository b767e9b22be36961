"""Choosing C: by the asked-for metric, ties broken by held-out log loss (never by grid position)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medprobe.trainer.metrics import point_metrics
from medprobe.trainer.protocol import fit_protocol, log_loss, pick_C
from medprobe.trainer.solvers import get_solver
from tests.helpers.cli import run_cli

GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _separable(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.array([0] * (n * 3 // 4) + [1] * (n - n * 3 // 4))  # imbalanced: a majority-class probe is visible
    X = rng.normal(size=(n, 8))
    X[:, 0] += np.where(y == 1, 6.0, -6.0)  # every C ranks the rows perfectly: AUC 1.0 on every fold
    return X, y


def test_every_C_tied_on_auc_picks_by_log_loss_not_the_smallest_C() -> None:
    X, y = _separable()
    (r,) = fit_protocol([X], y, "binary", ["a", "b"], get_solver("torch", device="cpu"), c_grid=GRID)
    means = {c: np.mean(v) for c, v in r.cv_scores.items()}
    assert set(means.values()) == {1.0}  # the tie this is about
    assert r.tied == len(GRID) and min(GRID) < r.C
    Xt, yt = _separable(seed=1)
    m = point_metrics(yt, r.probe.predict_proba(Xt), "binary", ["a", "b"]).values
    assert m["balanced_accuracy"] > 0.95  # the smallest C predicts the majority class: 0.5


def test_select_by_log_loss_picks_the_lowest_loss() -> None:
    X, y = _separable()
    (r,) = fit_protocol(
        [X], y, "binary", ["a", "b"], get_solver("torch", device="cpu"), c_grid=GRID, metric="log_loss"
    )
    losses = {float(c): np.mean(v) for c, v in r.cv_log_loss.items()}
    assert min(losses, key=losses.__getitem__) == r.C
    assert r.select_by == "log_loss"


@given(
    st.lists(st.floats(0, 1), min_size=3, max_size=3),
    st.lists(st.floats(0.01, 5), min_size=3, max_size=3),
)
def test_pick_C_takes_the_best_score_then_the_lowest_loss(scores: list[float], losses: list[float]) -> None:
    grid = [0.1, 1.0, 10.0]
    best, tied = pick_C(grid, [[s] for s in scores], [[v] for v in losses], "macro_auc")
    top = max(scores)
    candidates = [i for i, s in enumerate(scores) if s >= top - 1e-9 * max(1.0, top)]
    assert tied == len(candidates)
    assert best == min(candidates, key=lambda i: (losses[i], grid[i]))


def test_log_loss_of_perfect_and_uniform_predictions() -> None:
    y = np.array([0, 1, 1])
    assert log_loss(y, np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), "binary") == pytest.approx(0, abs=1e-12)
    assert log_loss(y, np.full((3, 2), 0.5), "binary") == pytest.approx(np.log(2))
    assert log_loss(np.array([[1, 0]]), np.array([[0.5, 0.5]]), "multilabel") == pytest.approx(np.log(2))


def test_select_by_is_an_option_and_is_stored(synth_store, capsys) -> None:
    args = ["train", "-t", "grade", "--feature-set", "fs-synth", "-s", synth_store.url, "--c-grid", "0.1,1",
            "--n-boot", "50", "--cv", "3", "-f", "json"]  # fmt: skip
    code, out, err = run_cli(capsys, *args, "--select-by", "balanced_accuracy")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["probes"][0]["selected_by"] == "balanced_accuracy"
    stored = synth_store.sql("SELECT metrics FROM probe_results WHERE run_id = ?", [doc["run_id"]]).column(0)
    assert json.loads(stored[0].as_py())["selected_by"] == "balanced_accuracy"
    code, _, err = run_cli(capsys, *args, "--select-by", "accuracy")
    assert code != 0 and "select-by" in err
