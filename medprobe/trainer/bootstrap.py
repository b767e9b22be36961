"""Vectorised, seeded bootstrap of every probe metric, and the paired comparison of two probes.

A bootstrap replicate is a row of a multiplicity matrix ``W`` (replicates x rows): how often each test
row was drawn. Every count-based metric is then ``W @ indicator`` and the AUC is the rank (Mann-Whitney)
statistic with weights, from one sort of the scores shared by all replicates - no per-replicate
scikit-learn calls. Replicates where a metric is undefined (e.g. no positives drawn) are left out of its
interval and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from medprobe.trainer.calibration import ECE_BINS, calibration_replicates
from medprobe.trainer.defaults import N_BOOT
from medprobe.trainer.metrics import SCALAR_METRICS, one_vs_rest, point_metrics, predicted_labels
from medprobe.trainer.solvers.base import ProbeKind

CI_LEVEL = 0.95


def multiplicities(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) counts of each row in each resample with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + (np.arange(n_boot) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def weighted_auc(scores: np.ndarray, truth: np.ndarray, W: np.ndarray) -> np.ndarray:
    """AUC of ``scores`` for boolean ``truth`` under each row of weights ``W`` (ties count one half).

    Returns (replicates,); NaN where a replicate holds no positive or no negative.
    """
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    Wo = W[:, order]
    t = truth[order]
    pos = np.add.reduceat(Wo * t, starts, axis=1)
    neg = np.add.reduceat(Wo * ~t, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def replicate_metrics(
    y: np.ndarray, proba: np.ndarray, kind: ProbeKind, n_classes: int, W: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric under each weight row of ``W``: {metric: (replicates,)}, per-class AUC as ``auc:k``."""
    truth = one_vs_rest(y, kind, n_classes)
    pred = predicted_labels(proba, kind)
    P = pred.astype(bool) if kind == "multilabel" else one_vs_rest(pred, "multiclass", n_classes)
    n = W.sum(1)
    tp = W @ (truth & P)
    support = W @ truth
    n_pred = W @ P
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "multilabel":
            out["accuracy"] = (W @ np.all(truth == P, axis=1)) / n
            tn = W @ (~truth & ~P)
            neg = n[:, None] - support
            rec = np.stack([tp / support, tn / neg])  # (2, B, K)
            out["balanced_accuracy"] = np.nanmean(np.nanmean(rec, axis=0), axis=1)
            denom = support + n_pred
            out["macro_f1"] = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0).mean(1)
        else:
            out["accuracy"] = (W @ (pred == np.asarray(y))) / n
            recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
            out["balanced_accuracy"] = np.nanmean(recall, axis=1)
            denom = support + n_pred
            f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
            out["macro_f1"] = np.nanmean(f1, axis=1)
        aucs = np.stack([weighted_auc(proba[:, k], truth[:, k], W) for k in range(n_classes)], axis=1)
        for k in range(n_classes):
            out[f"auc:{k}"] = aucs[:, k]
        defined_any = np.isfinite(aucs).any(1)
        macro = np.full(W.shape[0], np.nan)
        macro[defined_any] = np.nanmean(aucs[defined_any], axis=1)
        out["macro_auc"] = macro
    return out


def _interval(values: np.ndarray) -> tuple[float | None, float | None, int]:
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return None, None, 0
    a = (1 - CI_LEVEL) / 2
    lo, hi = np.quantile(ok, [a, 1 - a])
    return float(lo), float(hi), int(ok.size)


def ci_entry(value: float | None, reps: np.ndarray, n_boot: int) -> dict:
    """``{value, ci_low, ci_high}`` of a point value and its bootstrap replicates (undefined replicates left out
    and counted in ``n_replicates``)."""
    if value is None:
        return {"value": None, "ci_low": None, "ci_high": None}
    lo, hi, n_ok = _interval(reps)
    entry = {"value": value, "ci_low": lo, "ci_high": hi}
    if n_ok < n_boot:
        entry["n_replicates"] = n_ok
    return entry


def metrics_with_ci(
    y: np.ndarray,
    proba: np.ndarray,
    kind: ProbeKind,
    class_names: list[str],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict:
    """{metric: {value, ci_low, ci_high}, auc_per_class: {class: {...}}, brier and ece (calibration, with
    ``ece_bins``), undefined: {key: reason}}."""
    point = point_metrics(y, proba, kind, class_names)
    W = multiplicities(len(y), n_boot, seed)
    reps = replicate_metrics(y, proba, kind, len(class_names), W)
    out: dict = {m: ci_entry(point.values[m], reps[m], n_boot) for m in SCALAR_METRICS}
    out["auc_per_class"] = {
        name: ci_entry(point.auc_per_class[name], reps[f"auc:{k}"], n_boot) for k, name in enumerate(class_names)
    }
    calibration = calibration_replicates(y, proba, kind, np.ones((1, len(y))))
    boot_calibration = calibration_replicates(y, proba, kind, W)
    for name in ("brier", "ece"):
        out[name] = ci_entry(float(calibration[name][0]), boot_calibration[name], n_boot)
    out["ece_bins"] = ECE_BINS  # equal-mass bins (medprobe.trainer.calibration says what is calibrated)
    if point.reasons:
        out["undefined"] = dict(point.reasons)
    out["n_test"] = len(y)
    out["n_boot"] = n_boot
    out["seed"] = seed
    return out


def _paired_t(a: np.ndarray, b: np.ndarray) -> float:
    """Two-tailed paired t-test p-value; a constant difference gives 1 (zero) or 0 (non-zero)."""
    d = a - b
    if np.allclose(d, d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


@dataclass
class PairedResult:
    """Probe A minus probe B on the same test rows, for one metric."""

    metric: str
    value_a: float | None
    value_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_bootstrap: float | None  # two-sided, from the paired bootstrap distribution of the difference
    p_ttest: float | None  # the study's paired two-tailed t-test over the replicate values
    n_replicates: int



def paired_comparison(
    y: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    kind: ProbeKind,
    class_names: list[str],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, PairedResult]:
    """Paired bootstrap (the same resampled rows for both probes) of every scalar metric's difference.

    ``p_ttest`` reproduces the study's test (scipy ``ttest_rel`` over the bootstrap replicates); it shrinks
    with the number of replicates and is reported for comparison only - prefer ``p_bootstrap`` and the CI.
    """
    if proba_a.shape != proba_b.shape:
        raise ValueError(f"paired probes must score the same rows: {proba_a.shape} vs {proba_b.shape}")
    K = len(class_names)
    pa = point_metrics(y, proba_a, kind, class_names).values
    pb = point_metrics(y, proba_b, kind, class_names).values
    W = multiplicities(len(y), n_boot, seed)
    ra = replicate_metrics(y, proba_a, kind, K, W)
    rb = replicate_metrics(y, proba_b, kind, K, W)
    out = {}
    for m in SCALAR_METRICS:
        a, b = ra[m], rb[m]
        ok = np.isfinite(a) & np.isfinite(b)
        va, vb = pa[m], pb[m]
        if va is None or vb is None or ok.sum() < 2:
            out[m] = PairedResult(m, va, vb, None, None, None, None, None, int(ok.sum()))
            continue
        d = a[ok] - b[ok]
        lo, hi, _ = _interval(d)
        p_boot = min(1.0, 2 * min((d <= 0).sum() + 1, (d >= 0).sum() + 1) / (d.size + 1))
        p_t = _paired_t(a[ok], b[ok])
        out[m] = PairedResult(m, va, vb, float(va - vb), lo, hi, float(p_boot), p_t, int(ok.sum()))
    return out
