"""CV and subsampling index properties: test rows never seen, patients never split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medprobe.errors import InvalidInputError
from medprobe.trainer.protocol import Setting, cv_splits, fit_protocol, stratified_subsample, stratify_key
from medprobe.trainer.solvers import ProbeBatch, get_solver


@settings(max_examples=30, deadline=None)
@given(n_patients=st.integers(20, 80), n_classes=st.integers(2, 4), seed=st.integers(0, 1000))
def test_grouped_cv_never_splits_a_patient(n_patients, n_classes, seed):
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 4, n_patients)
    groups = np.repeat(np.arange(n_patients), per)
    patient_class = rng.integers(0, n_classes, n_patients)
    patient_class[: 2 * n_classes] = np.repeat(np.arange(n_classes), 2)  # every class has two patients
    y = patient_class[groups]
    splits, label = cv_splits(y, groups, 5, seed)
    assert label.endswith("grouped")
    seen = np.zeros(len(y), dtype=int)
    for tr, va in splits:
        assert not set(groups[tr]) & set(groups[va])
        assert not set(tr) & set(va)
        seen[va] += 1
    assert (seen == 1).all()


def test_cv_is_seeded():
    y = np.arange(100) % 3
    a, _ = cv_splits(y, None, 5, 7)
    b, _ = cv_splits(y, None, 5, 7)
    assert all((x[1] == z[1]).all() for x, z in zip(a, b, strict=True))


class _Recorder:
    """Wraps a solver and records every row set it is asked to fit on."""

    name = "recorder"

    def __init__(self):
        self.inner = get_solver("torch", device="cpu")
        self.row_sets: list[np.ndarray] = []
        self.n_rows: list[int] = []

    def fit_many(self, layers, y, kind, n_classes, batch: ProbeBatch, **kw):
        self.row_sets += [np.asarray(r) for r in batch.row_sets]
        self.n_rows.append(len(layers[0]))
        return self.inner.fit_many(layers, y, kind, n_classes, batch, **kw)


def test_protocol_only_sees_pool_rows_and_keeps_patients_whole():
    rng = np.random.default_rng(0)
    n = 300
    groups = np.repeat(np.arange(n // 3), 3)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 8)).astype(np.float32) + y[:, None]
    test = np.isin(groups, np.arange(0, n // 3, 4))  # a quarter of the patients held out
    pool = np.flatnonzero(~test)
    rec = _Recorder()
    res = fit_protocol(
        [X[pool]],
        y[pool],
        "binary",
        ["a", "b"],
        rec,
        groups=groups[pool],
        settings=[Setting(1.0, 0), Setting(0.5, 1)],
        c_grid=[0.1, 1.0],
    )
    assert set(rec.n_rows) == {len(pool)}  # the solver is only ever given pool rows
    for rows in rec.row_sets:
        original = pool[rows]
        assert not test[original].any()
    for r in res:
        assert r.selection == "cv:5:grouped"
        assert r.C in (0.1, 1.0)
    full = next(r for r in res if r.setting.fraction == 1.0)
    assert full.n_train == len(pool)


def test_stratified_subsample_keeps_every_class():
    y = np.array([0] * 500 + [1] * 30 + [2] * 5)
    rows = stratified_subsample(y, 0.01, 3)
    assert set(y[rows]) == {0, 1, 2}
    assert (np.bincount(y[rows]) >= 2).all()
    assert (rows == stratified_subsample(y, 0.01, 3)).all()
    assert not (rows == stratified_subsample(y, 0.01, 4)).all()


def test_multilabel_strata_use_the_rarest_finding():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]] * 5)
    assert stratify_key(y, "multilabel").tolist()[:4] == [0, 1, -1, 2]


def test_val_selection_needs_val_rows():
    y = np.arange(40) % 2
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="val rows"):
        fit_protocol(
            [X], y, "binary", ["a", "b"], get_solver("torch", device="cpu"), is_val=np.zeros(40, bool), selection="val"
        )


def test_multilabel_cv_folds_not_limited_by_a_tiny_rarest_finding_stratum():
    # every finding has >= 10 positives, but only one row has "a" as its rarest finding (stratum of size 1);
    # the folds must still be 5-fold CV and every fold's training rows must hold every finding
    rng = np.random.default_rng(0)
    rows = [[1, 0, 0]] + [[1, 0, 1]] * 10 + [[1, 1, 0]] * 10 + [[0, 1, 0]] * 2 + [[0, 0, 0]] * 17
    y = np.array(rows)
    X = rng.normal(size=(len(y), 4)).astype(np.float32) + y @ rng.normal(size=(3, 4)).astype(np.float32)
    results = fit_protocol([X], y, "multilabel", ["a", "b", "c"], get_solver("torch", device="cpu"), c_grid=(0.1, 1.0))
    assert results[0].selection == "cv:5:rows"
    assert all(len(v) == 5 for v in results[0].cv_scores.values())
