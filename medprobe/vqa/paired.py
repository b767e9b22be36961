"""Two VQA runs (models or modes) on the same items: paired accuracy difference with a group-clustered bootstrap
CI, and McNemar's exact test on the discordant items; the same per value of every category column (``by``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import binomtest

from medprobe.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


def _plain(store: FeatureStore, run_id: str) -> dict[str, dict[str, Any]]:
    rows = store.sql(
        "SELECT p.item_id, p.correct, i.group_id, i.categories, p.item_set FROM vqa_predictions p JOIN vqa_items i "
        "ON i.item_set = p.item_set AND i.item_id = p.item_id WHERE p.run_id = ? AND p.rotation = 0 "
        "AND p.correct IS NOT NULL",  # an open item scored by log-likelihood has no verdict to pair
        [run_id],
    ).to_pylist()
    if not rows:
        recent = store.sql("SELECT DISTINCT run_id FROM vqa_predictions ORDER BY 1 LIMIT 10").column(0).to_pylist()
        raise NotFoundError(f"no VQA predictions for run {run_id!r}; runs: {', '.join(recent) or 'none'}")
    return {r["item_id"]: r for r in rows}


def compare_runs(store: FeatureStore, run_a: str, run_b: str, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy of A minus B on the items both answered (source option order)."""
    a, b = _plain(store, run_a), _plain(store, run_b)
    if {r["item_set"] for r in a.values()} != {r["item_set"] for r in b.values()}:
        raise InvalidInputError(f"runs {run_a} and {run_b} scored different item sets; compare runs on one set")
    common = sorted(set(a) & set(b))
    if not common:
        raise InvalidInputError(f"runs {run_a} and {run_b} share no items")
    out = {"run_a": run_a, "run_b": run_b, **_paired(a, b, common, n_boot, seed)}
    by: dict[str, dict[str, list[str]]] = {}  # category column -> value -> item ids
    for i in common:
        for column, value in json.loads(a[i].get("categories") or "{}").items():
            by.setdefault(column, {}).setdefault(value, []).append(i)
    out["by"] = {column: {value: _paired(a, b, ids, n_boot, seed) for value, ids in sorted(values.items())}
                 for column, values in sorted(by.items())}  # fmt: skip
    return out


def _paired(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], ids: list[str], n_boot: int, seed: int
            ) -> dict[str, Any]:  # fmt: skip
    """Accuracy of A minus B on ``ids``: a group-clustered bootstrap CI and McNemar's exact test."""
    ca = np.array([bool(a[i]["correct"]) for i in ids], dtype=np.float64)
    cb = np.array([bool(b[i]["correct"]) for i in ids], dtype=np.float64)
    groups = np.array([a[i]["group_id"] or f"item:{i}" for i in ids], dtype=object).astype(str)
    labels, inverse = np.unique(groups, return_inverse=True)
    d = np.bincount(inverse, weights=ca - cb, minlength=len(labels))
    sizes = np.bincount(inverse, minlength=len(labels)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(n_boot, len(labels)))
    reps = d[draws].sum(1) / sizes[draws].sum(1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    p_boot = float(min(1.0, 2 * min(np.mean(reps <= 0), np.mean(reps >= 0))))
    only_a, only_b = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
    p_mcnemar = float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    return {
        "n_items": len(ids), "n_groups": len(labels), "accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean()),
        "diff": float(ca.mean() - cb.mean()), "ci_low": float(lo), "ci_high": float(hi), "p_bootstrap": p_boot,
        "only_a_right": only_a, "only_b_right": only_b, "p_mcnemar": p_mcnemar, "n_boot": n_boot,
    }  # fmt: skip
