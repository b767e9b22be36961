"""The kNN baseline under the probes' protocol: k chosen on training rows only, then one pass over the test rows.

For each layer x setting (a fraction of the training rows with a seed, as for probes): the setting's training rows
are split into the same folds the probes use (grouped stratified K-fold, or train -> val); every k of the grid is
scored on the folds; the best k (ties: the smaller) classifies the test rows with the whole setting's training
rows as neighbours. The label precision@k of the test rows (the retrieval metric) comes with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medprobe.errors import InvalidInputError
from medprobe.trainer.knn import choose_k, knn_proba, knn_targets, label_precision_at_k
from medprobe.trainer.protocol import Setting, selection_folds, stratified_subsample, stratify_key
from medprobe.trainer.solvers.base import ProbeKind


@dataclass
class KnnResult:
    """One layer x setting: the chosen k, its selection evidence, and the test rows' probabilities."""

    setting: Setting
    layer_pos: int
    k: int
    cv_scores: dict[str, list[float | None]]  # {k: [score per fold]}
    selection: str
    n_train: int
    proba: np.ndarray  # (test rows, outputs)
    precision_at_k: np.ndarray  # (test rows,) share of the k neighbours with the query's label
    # out-of-fold predictions at the chosen k (positions in the training pool): operating points are chosen on them
    oof_rows: np.ndarray | None = None
    oof_proba: np.ndarray | None = None


def check_k_grid(k_grid: Sequence[int], n_train: int) -> list[int]:
    """The k values that can be used with ``n_train`` training rows; a clear error when none can."""
    ks = sorted({int(k) for k in k_grid})
    if not ks or ks[0] < 1:
        raise InvalidInputError(f"--k values must be positive integers, got {list(k_grid)}")
    if ks[0] > n_train:
        raise InvalidInputError(
            f"--k {','.join(map(str, ks))}: the training rows number {n_train}, fewer than the smallest k; "
            f"choose k from 1 to {n_train}"
        )
    return [k for k in ks if k <= n_train]


def fit_knn_protocol(
    pool: Sequence[np.ndarray],
    y: np.ndarray,
    test: Sequence[np.ndarray],
    y_test: np.ndarray,
    kind: ProbeKind,
    class_names: Sequence[str],
    *,
    groups: np.ndarray | None,
    is_val: np.ndarray | None,
    selection: str,
    k_grid: Sequence[int],
    n_splits: int,
    metric: str,
    settings: Sequence[Setting],
    device: str | None = None,
    on_step: Callable[[], None] | None = None,
) -> list[KnnResult]:
    """kNN for every layer (``pool[g]``: training-pool features of layer g; ``test[g]``: its test rows)."""
    n_classes = len(class_names)
    strata = stratify_key(y, kind)
    ks = check_k_grid(k_grid, len(y))
    out = []
    for st in settings:
        rows = stratified_subsample(strata, st.fraction, st.seed)
        usable = [k for k in ks if k <= len(rows)] or [min(ks)]
        check_k_grid(usable, len(rows))
        if len(usable) > 1:
            folds, label = selection_folds(
                rows, strata, kind, selection=selection, groups=groups, is_val=is_val, n_splits=n_splits,
                seed=st.seed,
            )  # fmt: skip
            position = {int(r): i for i, r in enumerate(rows)}
            splits = [
                (np.array([position[int(r)] for r in tr]), np.array([position[int(r)] for r in va])) for tr, va in folds
            ]
        else:
            splits, label = [], "fixed"
        targets = knn_targets(y[rows], kind, n_classes)
        for g, (X, X_test) in enumerate(zip(pool, test, strict=True)):
            Xr = X[rows]
            if splits:
                k, scores = choose_k(
                    Xr, y[rows], targets, kind, n_classes, groups=None, k_grid=usable, metric=metric, device=device,
                    splits=splits,
                )  # fmt: skip
            else:
                k, scores = usable[0], {}
            proba = knn_proba(Xr, targets, X_test, k, device=device)
            precision = label_precision_at_k(Xr, y[rows], X_test, y_test, k, device=device)
            result = KnnResult(st, g, k, scores, label, len(rows), proba, precision)
            if splits:  # each validation row scored by its fold's neighbours at the chosen k
                result.oof_rows = np.concatenate([rows[va] for _, va in splits])
                result.oof_proba = np.concatenate([knn_proba(Xr[tr], targets[tr], Xr[va], k, device=device)
                                                   for tr, va in splits])  # fmt: skip
            out.append(result)
            if on_step is not None:
                on_step()
    return out
