"""DeLong's test for two correlated ROC AUCs (DeLong, DeLong & Clarke-Pearson, Biometrics 1988), computed with the
midrank formulation of Sun & Xu (IEEE Signal Processing Letters, 2014).

For two score vectors on the same rows and a binary truth with ``m`` positives and ``n`` negatives, each positive's
structural component is the share of negatives it outranks (ties count one half), each negative's the share of
positives that outrank it; the AUC is their mean, and the covariance of the two AUCs is
``S10 / m + S01 / n`` from the components' sample covariances. The statistic ``z = (AUC_a - AUC_b) / sd`` is
two-sided normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class DelongResult:
    """Both AUCs, their difference with a 95% normal CI, and the two-sided p-value (None when undefined)."""

    auc_a: float
    auc_b: float
    diff: float
    ci_low: float | None
    ci_high: float | None
    z: float | None
    p_value: float | None


def _components(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V10 per positive, V01 per negative) of one score vector, from midranks."""
    pos, neg = scores[truth], scores[~truth]
    m, n = len(pos), len(neg)
    rank_all = stats.rankdata(np.concatenate([pos, neg]))
    v10 = (rank_all[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (rank_all[m:] - stats.rankdata(neg)) / m
    return v10, v01


def delong_test(truth: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DelongResult | None:
    """DeLong's test of AUC(a) = AUC(b) on the same rows; None when ``truth`` holds one class only."""
    truth = np.asarray(truth).astype(bool)
    m, n = int(truth.sum()), int((~truth).sum())
    if m == 0 or n == 0:
        return None
    a10, a01 = _components(np.asarray(scores_a, dtype=np.float64), truth)
    b10, b01 = _components(np.asarray(scores_b, dtype=np.float64), truth)
    auc_a, auc_b = float(a10.mean()), float(b10.mean())
    s10 = np.cov(np.stack([a10, b10])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.stack([a01, b01])) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = auc_a - auc_b
    if not np.isfinite(var) or var <= 0:
        same = np.isclose(diff, 0.0)
        return DelongResult(auc_a, auc_b, diff, None, None, None, 1.0 if same else None)
    sd = float(np.sqrt(var))
    z = diff / sd
    half = float(stats.norm.ppf(0.975)) * sd
    return DelongResult(auc_a, auc_b, diff, diff - half, diff + half, z, float(2 * stats.norm.sf(abs(z))))
