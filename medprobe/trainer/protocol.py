"""The probe protocol: choose C on training rows only, refit, and hand back probes for one test pass.

Rows given to :func:`fit_protocol` are the experiment's *training pool* (train and val splits); test rows
never enter. C is chosen on a log grid either by stratified K-fold cross-validation, grouped by patient
when group ids exist (``StratifiedGroupKFold``), or on the pool's validation rows; the chosen C is then
refitted on every training row of the setting. Label efficiency adds settings: stratified subsamples of
the training rows at several fractions x seeds. With ``grid='full'`` every fold x C x setting x layer is one
column of a single batched solve (the default); ``grid='adaptive'`` solves one C at a time from the smallest (every
fold x setting x layer batched) and stops once the CV score has clearly turned. All refits are one more solve.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from medprobe.errors import InvalidInputError
from medprobe.schemas.vocab import CGrid, Selection
from medprobe.trainer.bootstrap import replicate_metrics
from medprobe.trainer.defaults import DEFAULT_C_GRID
from medprobe.trainer.solvers import Solver, solver_session
from medprobe.trainer.solvers.base import (
    FittedProbe,
    ProbeBatch,
    ProbeKind,
    RawWeights,
    logits_to_proba,
    mean_raw_weights,
)


def stratify_key(y: np.ndarray, kind: ProbeKind) -> np.ndarray:
    """One stratum per row: the class, or for multilabel the rarest positive finding (``-1`` for none)."""
    y = np.asarray(y)
    if kind != "multilabel":
        return y.astype(int)
    counts = y.sum(0)
    rank = np.argsort(np.argsort(counts, kind="stable"), kind="stable")  # 0 = rarest finding
    key = np.full(len(y), -1)
    for i, row in enumerate(y.astype(bool)):
        if row.any():
            pos = np.flatnonzero(row)
            key[i] = pos[np.argmin(rank[pos])]
    return key


def cv_strata(strata: np.ndarray, kind: ProbeKind, n_splits: int) -> np.ndarray:
    """Strata for K-fold CV. Multilabel strata (rarest finding per row) smaller than ``n_splits`` are pooled
    (into the largest stratum when the pool is still too small): a finding that is seldom a row's *rarest*
    can have many positives, so its stratum's size must not limit the number of folds."""
    strata = np.asarray(strata)
    if kind != "multilabel":
        return strata
    values, counts = np.unique(strata, return_counts=True)
    small = values[counts < n_splits]
    if small.size == 0:
        return strata
    out = strata.copy()
    pooled = np.isin(out, small)
    out[pooled] = values.min() - 1 if pooled.sum() >= n_splits else values[counts.argmax()]
    return out


def cv_splits(
    strata: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int, *, strict: bool = False
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Seeded stratified K-fold (grouped when ``groups`` is given) over positions ``0..len(strata)-1``.

    Uses ``min(n_splits, smallest stratum, number of groups)`` folds (``strict``: refuses fewer than asked instead);
    returns the splits and a label such as ``"cv:5:grouped"`` naming the folds used.
    """
    _, counts = np.unique(strata, return_counts=True)
    k = min(n_splits, int(counts.min()))
    n_groups = len(np.unique(groups)) if groups is not None else None
    if n_groups is not None:
        k = min(k, n_groups)
    if strict and 2 <= k < n_splits:
        groups_note = f" and {n_groups} patient groups" if n_groups is not None else ""
        raise InvalidInputError(
            f"--cv {n_splits}: the training rows allow at most {k} folds (the smallest class has "
            f"{int(counts.min())} rows{groups_note}); use --cv {k} or fewer"
        )
    if k < 2:
        raise InvalidInputError(
            f"cross-validation needs at least 2 rows (and groups) of every class; the smallest class has "
            f"{int(counts.min())}: add training rows, raise --train-fraction, or use --selection val"
        )
    X = np.zeros((len(strata), 1))
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = list(splitter.split(X, strata, groups))
    else:
        splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, strata))
    return splits, f"cv:{k}:{'grouped' if groups is not None else 'rows'}"


def stratified_subsample(strata: np.ndarray, fraction: float, seed: int, min_per_class: int = 2) -> np.ndarray:
    """Sorted positions of a seeded subsample keeping ``fraction`` of every stratum (at least ``min_per_class``)."""
    if not 0 < fraction <= 1:
        raise InvalidInputError(f"--train-fraction values must lie in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(len(strata))
    rng = np.random.default_rng(seed)
    keep = []
    for s in np.unique(strata):
        pos = np.flatnonzero(strata == s)
        k = min(len(pos), max(min_per_class, round(fraction * len(pos))))
        keep.append(rng.choice(pos, size=k, replace=False))
    return np.sort(np.concatenate(keep))


@dataclass(frozen=True)
class Setting:
    """One training-set choice: a fraction of the training rows with a seed."""

    fraction: float
    seed: int


@dataclass
class ProtocolResult:
    """Per (layer, setting): the refitted probe, chosen C, and the selection evidence."""

    setting: Setting
    layer_pos: int  # index into the layers passed in
    probe: FittedProbe
    C: float
    cv_scores: dict[str, list[float | None]]  # {C: [score per fold]}
    selection: str
    n_train: int
    train_rows: np.ndarray  # positions in the training pool
    select_by: str = "macro_auc"  # the metric that chose C
    cv_log_loss: dict[str, list[float]] = field(default_factory=dict)  # {C: held-out log loss per fold}
    tied: int = 1  # C values that tied on the selection metric (broken by log loss)
    cv_not_converged: dict[str, int] = field(default_factory=dict)  # {C: fold probes not converged}
    # out-of-fold predictions at the chosen C: each training row scored by the fold probe that did not see it
    # (positions in the training pool, and their probabilities); operating points are chosen on these
    oof_rows: np.ndarray | None = None
    oof_proba: np.ndarray | None = None


@dataclass
class ProtocolTiming:
    select_seconds: float = 0.0
    refit_seconds: float = 0.0
    n_probes: int = 0
    extra: dict = field(default_factory=dict)


def _check_classes(y_rows: np.ndarray, kind: ProbeKind, class_names: Sequence[str], where: str) -> None:
    if kind == "multilabel":
        pos = y_rows.sum(0)
        bad = [class_names[k] for k in range(len(class_names)) if pos[k] == 0 or pos[k] == len(y_rows)]
        if bad:
            raise InvalidInputError(f"{where} has no positive (or no negative) rows of finding(s) {bad}")
        return
    present = set(np.unique(y_rows).tolist())
    absent = [class_names[k] for k in range(len(class_names)) if k not in present]
    if absent:
        raise InvalidInputError(
            f"{where} has no rows of class(es) {absent}: every class must appear in training "
            "(use fewer folds with --cv, a larger --train-fraction, or fix the dataset's splits)"
        )


LOWER_IS_BETTER = frozenset({"log_loss"})
TIE_TOLERANCE = 1e-9  # mean selection scores this close are a tie, broken by held-out log loss
# the adaptive grid stops climbing C once this many C values in a row score clearly below the best so far
DROP_PATIENCE = 2
DROP_MARGIN = 0.01  # "clearly": by more than this (x max(1, |best|)) in mean fold score
LOSS_MARGIN = 0.05  # ... or not better while the held-out log loss is this much (relative) above its minimum


def log_loss(y: np.ndarray, proba: np.ndarray, kind: ProbeKind) -> float:
    """Mean negative log-likelihood of the labels (multilabel: mean over rows and findings), probabilities clipped."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1 - 1e-15)
    y = np.asarray(y)
    if kind == "multilabel":
        t = y.astype(np.float64)
        return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y.astype(int)])))


def score_probes(
    X: np.ndarray, y: np.ndarray, probes: Sequence[FittedProbe], kind: ProbeKind, n_classes: int, metric: str
) -> list[tuple[float | None, float]]:
    """(selection metric, log loss) of each probe on rows ``X``; the probes must share one training row set."""
    out: list[tuple[float | None, float]] = []
    W = np.ones((1, len(y)))
    Z = ((np.asarray(X, dtype=np.float64) - probes[0].mean) / probes[0].scale).astype(np.float32)
    for p in probes:
        logits = Z @ p.coef.T.astype(np.float32) + p.intercept.astype(np.float32)
        proba = logits_to_proba(logits, kind)
        loss = log_loss(y, proba, kind)
        value = loss if metric == "log_loss" else replicate_metrics(y, proba, kind, n_classes, W)[metric][0]
        out.append((float(value) if np.isfinite(value) else None, loss))
    return out


@dataclass
class _SelectionPlan:
    """The columns of the selection solve: one per setting x fold x C, each fitted on its fold's training rows."""

    train_rows_of: list[np.ndarray]  # per setting: its training rows (a subsample for fractions below 1)
    labels: list[str]  # per setting: how C is chosen ("val", or the CV splitter's description)
    val_rows: list[list[np.ndarray]]  # per setting, per fold: the rows that score the fold's probes
    row_sets: list[np.ndarray] = field(default_factory=list)  # per (setting, fold): the rows its probes fit on
    cols: list[tuple[int, int, int]] = field(default_factory=list)  # (setting, fold, C index) per column

    def batch(self, c_grid: Sequence[float], n_layers: int) -> ProbeBatch:
        """The solver's batch: every column's row set and C, the same for every layer."""
        set_index: dict[tuple[int, int], int] = {}
        row_set_of = [set_index.setdefault((si, fi), len(set_index)) for si, fi, _ in self.cols]
        C = np.tile(np.array([c_grid[ci] for _, _, ci in self.cols]), (n_layers, 1))
        return ProbeBatch(self.row_sets, np.array(row_set_of), C)


def selection_folds(
    rows: np.ndarray,
    strata: np.ndarray,
    kind: ProbeKind,
    *,
    selection: Selection | str,
    groups: np.ndarray | None,
    is_val: np.ndarray | None,
    n_splits: int,
    seed: int,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """(train rows, validation rows) of each fold of one setting's ``rows``, and the selection's label."""
    if selection == "cv":
        g = None if groups is None else np.asarray(groups)[rows]
        # the full training pool must allow the folds asked for; a small subsample may use fewer (its label says so)
        splits, label = cv_splits(
            cv_strata(strata[rows], kind, n_splits), g, n_splits, seed, strict=len(rows) == len(strata)
        )
        return [(rows[tr], rows[va]) for tr, va in splits], label
    if selection == "val":
        if is_val is None or not np.any(is_val[rows]) or np.all(is_val[rows]):
            raise InvalidInputError(
                "--selection val needs both train and val rows in the training pool; this dataset has "
                f"{int(np.sum(is_val)) if is_val is not None else 0} val rows: use --selection cv"
            )
        return [(rows[~is_val[rows]], rows[is_val[rows]])], "val"
    raise InvalidInputError(f"unknown selection {selection!r}: use cv or val")


def _plan_selection(
    y: np.ndarray,
    strata: np.ndarray,
    kind: ProbeKind,
    class_names: Sequence[str],
    settings: Sequence[Setting],
    n_c: int,
    *,
    selection: Selection | str,
    groups: np.ndarray | None,
    is_val: np.ndarray | None,
    n_splits: int,
) -> _SelectionPlan:
    """Subsample each setting's training rows, split them into folds, and lay out one column per fold x C."""
    plan = _SelectionPlan(train_rows_of=[], labels=[], val_rows=[])
    for si, st in enumerate(settings):
        rows = stratified_subsample(strata, st.fraction, st.seed)
        _check_classes(y[rows], kind, class_names, f"the training rows (fraction {st.fraction}, seed {st.seed})")
        folds, label = selection_folds(
            rows, strata, kind, selection=selection, groups=groups, is_val=is_val, n_splits=n_splits, seed=st.seed
        )
        plan.train_rows_of.append(rows)
        plan.labels.append(label)
        plan.val_rows.append([va for _, va in folds])
        for fi, (tr, _) in enumerate(folds):
            _check_classes(y[tr], kind, class_names, f"fold {fi} of {label} (fraction {st.fraction}, seed {st.seed})")
            plan.row_sets.append(tr)
            plan.cols.extend((si, fi, ci) for ci in range(n_c))
    return plan


@dataclass
class Choice:
    """The C chosen for one (layer, setting) and the evidence: every C's fold scores and fold log losses."""

    C: float
    scores: dict[str, list[float | None]]  # {repr(C): selection metric per fold}
    log_losses: dict[str, list[float]]  # {repr(C): held-out log loss per fold}
    tied: int  # how many C values tied on the selection metric (1: no tie)
    not_converged: dict[str, int] = field(default_factory=dict)  # {repr(C): fold probes that hit the iteration cap}


def pick_C(
    c_grid: Sequence[float], scores: Sequence[Sequence[float | None]], losses: Sequence[Sequence[float]], metric: str
) -> tuple[int, int]:
    """Index of the best C by mean fold score (``log_loss``: lowest), ties broken by the lowest mean held-out log
    loss, then the smallest C; and how many C values tied on the score."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    means = np.array([np.mean([v for v in s if v is not None] or [np.nan]) for s in scores]) * sign
    if np.all(np.isnan(means)):
        raise InvalidInputError(
            f"the selection metric {metric} is undefined on every validation fold (each holds one class): use "
            "--selection cv with more rows, or --select-by log_loss"
        )
    best = np.nanmax(means)
    tied = [i for i, m in enumerate(means) if np.isfinite(m) and m >= best - TIE_TOLERANCE * max(1.0, abs(best))]
    loss = {i: float(np.mean(losses[i])) for i in tied}
    chosen = min(tied, key=lambda i: (loss[i], c_grid[i]))
    return chosen, len(tied)


def _score_layer(
    X: np.ndarray,
    y: np.ndarray,
    fitted_row: Sequence[FittedProbe],
    cols: Sequence[tuple[int, int, int]],
    plan: _SelectionPlan,
    kind: ProbeKind,
    n_classes: int,
    metric: str,
    scores: dict[int, dict[int, list[float | None]]],
    losses: dict[int, dict[int, list[float]]],
    unconverged: dict[int, dict[int, int]],
) -> None:
    """Score one layer's fold probes (``fitted_row[m]`` fitted for ``cols[m]``) on their validation rows; count
    per (setting, C) the probes that stopped at the iteration cap."""
    for m, (si, _, ci) in enumerate(cols):
        counts = unconverged.setdefault(si, {})
        counts[ci] = counts.get(ci, 0) + (0 if fitted_row[m].converged else 1)
    for si, fi in sorted({(si, fi) for si, fi, _ in cols}):
        idx = [m for m, (s2, f2, _) in enumerate(cols) if (s2, f2) == (si, fi)]
        va = plan.val_rows[si][fi]
        vals = score_probes(np.asarray(X)[va], y[va], [fitted_row[m] for m in idx], kind, n_classes, metric)
        for m, (v, loss) in zip(idx, vals, strict=True):
            scores.setdefault(si, {}).setdefault(cols[m][2], []).append(v)
            losses.setdefault(si, {}).setdefault(cols[m][2], []).append(loss)


def _choice(
    c_grid: Sequence[float],
    evaluated: Sequence[int],
    scores: dict[int, list[float | None]],
    losses: dict[int, list[float]],
    metric: str,
    unconverged: dict[int, int],
) -> Choice:
    """Pick among the evaluated C indices (see :func:`pick_C`)."""
    grid = [c_grid[ci] for ci in evaluated]
    best, tied = pick_C(grid, [scores[ci] for ci in evaluated], [losses[ci] for ci in evaluated], metric)
    return Choice(
        float(grid[best]),
        {repr(c_grid[ci]): scores[ci] for ci in evaluated},
        {repr(c_grid[ci]): losses[ci] for ci in evaluated},
        tied,
        {repr(c_grid[ci]): unconverged.get(ci, 0) for ci in evaluated if unconverged.get(ci, 0)},
    )


def _choose_C(
    layers: Sequence[np.ndarray],
    y: np.ndarray,
    fitted: list[list[FittedProbe]],
    plan: _SelectionPlan,
    c_grid: Sequence[float],
    kind: ProbeKind,
    n_classes: int,
    metric: str,
) -> dict[tuple[int, int], Choice]:
    """The chosen C and its evidence per (layer, setting) on the full grid; see :func:`pick_C`."""
    choices: dict[tuple[int, int], Choice] = {}
    for g, X in enumerate(layers):
        scores: dict[int, dict[int, list[float | None]]] = {}
        losses: dict[int, dict[int, list[float]]] = {}
        unconverged: dict[int, dict[int, int]] = {}
        _score_layer(X, y, fitted[g], plan.cols, plan, kind, n_classes, metric, scores, losses, unconverged)
        for si in range(len(plan.train_rows_of)):
            choices[(g, si)] = _choice(c_grid, range(len(c_grid)), scores[si], losses[si], metric, unconverged[si])
    return choices


def clearly_past_the_best(means: Sequence[float], mean_losses: Sequence[float], metric: str) -> bool:
    """Whether climbing C further is pointless: over the last ``DROP_PATIENCE`` C values (in climbing order) the
    selection score either fell clearly below the best so far, or did not improve on it while the held-out log loss
    rose clearly above its minimum (the probe overfits, the score only wobbles)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    values = [sign * m for m in means]
    if len(values) <= DROP_PATIENCE or not all(np.isfinite(values)):
        return False
    best = max(values)
    last = values[-DROP_PATIENCE:]
    margin = DROP_MARGIN * max(1.0, abs(best))
    if all(v < best - margin for v in last):
        return True
    floor = min(mean_losses)
    not_better = all(v < best - TIE_TOLERANCE * max(1.0, abs(best)) for v in last)
    overfitting = all(loss > floor * (1.0 + LOSS_MARGIN) for loss in mean_losses[-DROP_PATIENCE:])
    return not_better and overfitting


FoldProbes = dict[tuple[int, int, int, int], FittedProbe]  # (layer, setting, fold, C index) -> fold probe


def _choose_C_path(
    layers: Sequence[np.ndarray],
    y: np.ndarray,
    plan: _SelectionPlan,
    c_grid: Sequence[float],
    kind: ProbeKind,
    n_classes: int,
    metric: str,
    solver: Solver,
    *,
    class_weight: str | None,
    on_iteration: Callable[[int, int], None] | None,
    stop_early: bool,
    warm_start: bool,
) -> tuple[dict[tuple[int, int], Choice], int, FoldProbes]:
    """Climb the grid from the smallest C, one batched solve per C (every layer x setting x fold together), each
    fold probe starting from the same fold's probe at the previous C (``warm_start``). With ``stop_early`` (the
    adaptive grid) a (layer, setting) stops once its CV score has clearly turned (:func:`clearly_past_the_best`):
    large C values cost the most iterations and are rarely chosen.

    Returns the choices, the number of probes fitted and the fold probes.
    """
    n_settings = len(plan.train_rows_of)
    order = sorted(range(len(c_grid)), key=lambda ci: c_grid[ci])
    scores: dict[int, dict[int, dict[int, list[float | None]]]] = {g: {} for g in range(len(layers))}
    losses: dict[int, dict[int, dict[int, list[float]]]] = {g: {} for g in range(len(layers))}
    unconverged: dict[int, dict[int, dict[int, int]]] = {g: {} for g in range(len(layers))}
    evaluated: dict[tuple[int, int], list[int]] = {(g, si): [] for g in range(len(layers)) for si in range(n_settings)}
    active = set(evaluated)
    n_probes = 0
    fold_probes: FoldProbes = {}
    # the smallest C values converge fast and are always needed: the first round solves DROP_PATIENCE + 1 together
    first = DROP_PATIENCE + 1
    rounds = [order[:first]] + [[ci] for ci in order[first:]]
    previous: int | None = None  # the largest C index solved so far (rounds climb C)
    for round_c in rounds:
        if not active:
            break
        gs = sorted({g for g, _ in active})
        sis = sorted({si for _, si in active})
        cols = [c for c in plan.cols if c[2] in round_c and c[0] in sis]
        sub = _SelectionPlan(plan.train_rows_of, plan.labels, plan.val_rows, plan.row_sets, cols)
        batch = sub.batch(c_grid, len(gs))
        if warm_start and previous is not None:  # each fold probe starts from the same fold's at the C just below
            start = [[fold_probes[(g, si, fi, previous)].raw_weights() for si, fi, _ in cols] for g in gs]
            batch = ProbeBatch(batch.row_sets, batch.row_set_of, batch.C, start)
        fitted = solver.fit_many(
            [layers[g] for g in gs], y, kind, n_classes, batch, class_weight=class_weight, on_iteration=on_iteration
        )
        n_probes += len(gs) * len(cols)
        previous = round_c[-1]
        for pos, g in enumerate(gs):
            for m, (si, fi, ci) in enumerate(cols):
                fold_probes[(g, si, fi, ci)] = fitted[pos][m]
            _score_layer(
                layers[g], y, fitted[pos], cols, plan, kind, n_classes, metric, scores[g], losses[g], unconverged[g]
            )
        for key in sorted(active):
            g, si = key
            if si not in sis:
                continue
            evaluated[key].extend(round_c)
            per_c = scores[g][si]
            means = [float(np.mean([v for v in per_c[c] if v is not None] or [np.nan])) for c in evaluated[key]]
            mean_losses = [float(np.mean(losses[g][si][c])) for c in evaluated[key]]
            if stop_early and clearly_past_the_best(means, mean_losses, metric):
                active.discard(key)
    choices = {
        (g, si): _choice(c_grid, evaluated[(g, si)], scores[g][si], losses[g][si], metric, unconverged[g].get(si, {}))
        for g, si in evaluated
    }
    return choices, n_probes, fold_probes


def _refit_start(
    fold_probes: FoldProbes, plan: _SelectionPlan, best_C: np.ndarray, c_grid: Sequence[float]
) -> list[list[RawWeights | None]]:
    """Each refit starts from the mean of its fold probes at the chosen C (a close guess on nearly the same rows)."""
    out: list[list[RawWeights | None]] = []
    for g in range(best_C.shape[0]):
        row: list[RawWeights | None] = []
        for si in range(best_C.shape[1]):
            ci = c_grid.index(float(best_C[g, si]))
            folds = [fold_probes.get((g, si, fi, ci)) for fi in range(len(plan.val_rows[si]))]
            row.append(mean_raw_weights([p for p in folds if p is not None]) if all(folds) else None)
        out.append(row)
    return out


def fit_protocol(
    layers: Sequence[np.ndarray],
    y: np.ndarray,
    kind: ProbeKind,
    class_names: Sequence[str],
    solver: Solver,
    *,
    groups: np.ndarray | None = None,
    is_val: np.ndarray | None = None,
    selection: Selection | str = Selection.cv,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    n_splits: int = 5,
    metric: str = "macro_auc",
    settings: Sequence[Setting] = (Setting(1.0, 0),),
    class_weight: str | None = None,
    on_iteration: Callable[[int, int], None] | None = None,
    timing: ProtocolTiming | None = None,
    grid: CGrid | str = CGrid.adaptive,
    warm_start: bool = True,
) -> list[ProtocolResult]:
    """Select C and refit for every layer x setting on the training pool; see the module docstring.

    ``layers``: one (pool rows, features) array per layer; ``is_val`` marks the pool's validation rows
    (needed for ``selection='val'``). ``grid``: ``adaptive`` climbs C from the smallest and stops once the CV score
    has clearly turned; ``full`` fits every C. ``warm_start``: each C starts from the previous C's solution and each
    refit from its fold probes (False: every probe from zero, and the full grid in one batched solve, as before warm
    starts; kept for comparisons). Returns results ordered by setting, then layer.
    """
    y = np.asarray(y)
    c_grid = [float(c) for c in c_grid]
    plan = _plan_selection(
        y, stratify_key(y, kind), kind, class_names, settings, len(c_grid),
        selection=selection, groups=groups, is_val=is_val, n_splits=n_splits,
    )  # fmt: skip
    if grid not in (CGrid.full, CGrid.adaptive):
        raise InvalidInputError(f"unknown --grid {grid!r}: choose adaptive or full")
    with solver_session(solver):  # every solve below works on the same layers: prepare each once
        return _select_and_refit(
            layers, y, kind, class_names, solver, plan, settings, c_grid, metric, class_weight, on_iteration, timing,
            grid, warm_start,
        )  # fmt: skip


def _select_and_refit(
    layers: Sequence[np.ndarray],
    y: np.ndarray,
    kind: ProbeKind,
    class_names: Sequence[str],
    solver: Solver,
    plan: _SelectionPlan,
    settings: Sequence[Setting],
    c_grid: list[float],
    metric: str,
    class_weight: str | None,
    on_iteration: Callable[[int, int], None] | None,
    timing: ProtocolTiming | None,
    grid: CGrid | str,
    warm_start: bool,
) -> list[ProtocolResult]:
    K = len(class_names)
    t0 = time.perf_counter()
    fold_probes: FoldProbes = {}
    if grid == CGrid.full and not warm_start:
        fitted = solver.fit_many(
            layers, y, kind, K, plan.batch(c_grid, len(layers)), class_weight=class_weight, on_iteration=on_iteration
        )
        choices = _choose_C(layers, y, fitted, plan, c_grid, kind, K, metric)
        n_selection = len(layers) * len(plan.cols)
        fold_probes = {(g, si, fi, ci): fitted[g][m] for g in range(len(layers))
                       for m, (si, fi, ci) in enumerate(plan.cols)}  # fmt: skip
    else:
        choices, n_selection, fold_probes = _choose_C_path(
            layers, y, plan, c_grid, kind, K, metric, solver, class_weight=class_weight, on_iteration=on_iteration,
            stop_early=grid == CGrid.adaptive, warm_start=warm_start,
        )  # fmt: skip
    best_C = np.array([[choices[(g, si)].C for si in range(len(settings))] for g in range(len(layers))])
    t1 = time.perf_counter()
    start = _refit_start(fold_probes, plan, best_C, c_grid) if warm_start else None
    refit_batch = ProbeBatch(plan.train_rows_of, np.arange(len(settings)), best_C, start)
    refit = solver.fit_many(layers, y, kind, K, refit_batch, class_weight=class_weight, on_iteration=on_iteration)
    t2 = time.perf_counter()
    if timing is not None:
        timing.select_seconds += t1 - t0
        timing.refit_seconds += t2 - t1
        timing.n_probes += n_selection + len(layers) * len(settings)
    return [
        ProtocolResult(
            st, g, refit[g][si], choices[(g, si)].C, choices[(g, si)].scores, plan.labels[si],
            len(plan.train_rows_of[si]), plan.train_rows_of[si], metric, choices[(g, si)].log_losses,
            choices[(g, si)].tied, choices[(g, si)].not_converged,
            *_out_of_fold(layers[g], fold_probes, plan, g, si, c_grid.index(choices[(g, si)].C)),
        )
        for si, st in enumerate(settings)
        for g in range(len(layers))
    ]  # fmt: skip


def _out_of_fold(X: np.ndarray, fold_probes: FoldProbes, plan: _SelectionPlan, g: int, si: int, ci: int
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:  # fmt: skip
    """Each validation row of the setting's folds scored by its fold's probe at the chosen C (every training row
    once under CV; the val rows under ``--selection val``)."""
    rows, probas = [], []
    for fi, va in enumerate(plan.val_rows[si]):
        probe = fold_probes.get((g, si, fi, ci))
        if probe is None:
            return None, None
        rows.append(va)
        probas.append(probe.predict_proba(np.asarray(X)[va]))
    return np.concatenate(rows), np.concatenate(probas)
