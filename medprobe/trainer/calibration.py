"""Calibration of predicted probabilities: Brier score and expected calibration error (ECE), point and bootstrap.

What is calibrated, per kind of task:

- binary: the probability of the positive class (the second class) against the 0/1 truth;
- multiclass: the top-label confidence (the largest probability) against whether the top label is right;
  the Brier score is the multi-class one, the sum over classes of the squared error, averaged over rows;
- multilabel: each finding's probability against its 0/1 truth; Brier and ECE are the mean over findings.

ECE uses ``ECE_BINS`` equal-mass bins (each holds the same number of test rows, ties kept in rank order): the
row-weighted mean over bins of |mean confidence - observed frequency|. Bins are fixed on the test rows; a bootstrap
replicate reweights the rows within them (the CI says how much the ECE moves with the rows drawn).
"""

from __future__ import annotations

import numpy as np

from medprobe.trainer.solvers.base import ProbeKind

ECE_BINS = 10


def confidence_and_outcome(y: np.ndarray, proba: np.ndarray, kind: ProbeKind) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) confidences and their 0/1 outcomes: one column (binary, multiclass) or one per finding."""
    proba = np.asarray(proba, dtype=np.float64)
    if kind == "multilabel":
        return proba, np.asarray(y, dtype=np.float64)
    if kind == "binary":
        return proba[:, 1:2], (np.asarray(y) == 1).astype(np.float64)[:, None]
    top = proba.argmax(1)
    return proba.max(1)[:, None], (top == np.asarray(y)).astype(np.float64)[:, None]


def brier_rows(y: np.ndarray, proba: np.ndarray, kind: ProbeKind) -> np.ndarray:
    """Each row's Brier term (its mean over rows is the Brier score)."""
    proba = np.asarray(proba, dtype=np.float64)
    if kind == "multilabel":
        return ((proba - np.asarray(y, dtype=np.float64)) ** 2).mean(1)
    if kind == "binary":
        return (proba[:, 1] - (np.asarray(y) == 1)) ** 2
    truth = np.zeros_like(proba)
    truth[np.arange(len(proba)), np.asarray(y).astype(int)] = 1.0
    return ((proba - truth) ** 2).sum(1)


def equal_mass_bins(confidence: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Bin index of each row: rows sorted by confidence (stable), cut into ``n_bins`` bins of equal count (the first
    ``n % n_bins`` bins one row larger)."""
    n = len(confidence)
    k = max(1, min(n_bins, n))
    sizes = np.full(k, n // k) + (np.arange(k) < n % k)
    bins = np.empty(n, dtype=int)
    bins[np.argsort(confidence, kind="stable")] = np.repeat(np.arange(k), sizes)
    return bins


def weighted_ece(confidence: np.ndarray, outcome: np.ndarray, W: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """ECE under each row of weights ``W`` (replicates x rows): mean over columns of the per-column ECE."""
    per_column = []
    total = W.sum(1)
    for m in range(confidence.shape[1]):
        bins = equal_mass_bins(confidence[:, m], n_bins)
        onehot = np.zeros((len(bins), bins.max() + 1))
        onehot[np.arange(len(bins)), bins] = 1.0
        gap = W @ (onehot * (confidence[:, m] - outcome[:, m])[:, None])  # (replicates, bins) summed gaps
        with np.errstate(invalid="ignore", divide="ignore"):
            per_column.append(np.abs(gap).sum(1) / total)
    return np.mean(per_column, axis=0)


def calibration_replicates(y: np.ndarray, proba: np.ndarray, kind: ProbeKind, W: np.ndarray,
                           n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:  # fmt: skip
    """``{"brier": (replicates,), "ece": (replicates,)}`` under the weight rows of ``W`` (a row of ones: the
    point estimate)."""
    conf, outcome = confidence_and_outcome(y, proba, kind)
    with np.errstate(invalid="ignore", divide="ignore"):
        brier = (W @ brier_rows(y, proba, kind)) / W.sum(1)
    return {"brier": brier, "ece": weighted_ece(conf, outcome, W, n_bins)}


def _scores(proba: np.ndarray, kind: ProbeKind) -> np.ndarray:
    """Logits that reproduce ``proba``: log-probabilities (softmax kinds) or log-odds (multilabel sigmoids)."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p)) if kind == "multilabel" else np.log(p)


def with_temperature(proba: np.ndarray, kind: ProbeKind, temperature: float) -> np.ndarray:
    """Probabilities with their logits divided by ``temperature`` (ranks within a row are unchanged)."""
    z = _scores(proba, kind) / temperature
    if kind == "multilabel":
        return 1 / (1 + np.exp(-z))
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _nll(y: np.ndarray, proba: np.ndarray, kind: ProbeKind) -> float:
    p = np.clip(proba, 1e-12, 1 - 1e-12)
    if kind == "multilabel":
        t = np.asarray(y, dtype=np.float64)
        return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(p)), np.asarray(y).astype(int)]).mean())


def fit_temperature(y: np.ndarray, proba: np.ndarray, kind: ProbeKind) -> float:
    """The one temperature that minimises the log loss of ``proba`` (out-of-fold predictions) on labels ``y``."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: _nll(y, with_temperature(proba, kind, float(np.exp(log_t))), kind),
                            bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-6})  # fmt: skip
    return float(np.exp(found.x))
