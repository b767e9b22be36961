"""Subgroup performance: a probe's test rows split by a per-image metadata column (sex, site, age bins), each group
scored with bootstrap CIs, and the largest gap between groups with its CI.

- ``COLUMN``: a text column gives one group per value; a numeric column is cut into quartiles.
- ``COLUMN:N``: a numeric column cut into N bins at the quantiles of the *training* rows' values (the test rows
  never place a bin edge); the lowest and highest bins are open-ended.
- Rows without a value are counted (``n_missing``) and left out. A group with fewer than ``MIN_GROUP`` test rows is
  flagged, not scored.
- Every group is scored under the same bootstrap replicates (the test rows' multiplicities), so the gap between the
  best and the worst scored group (by macro AUC) gets a paired CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medprobe.errors import InvalidInputError
from medprobe.trainer.bootstrap import ci_entry, replicate_metrics
from medprobe.trainer.operating_points import Rule, operating_points, points_at
from medprobe.trainer.solvers.base import ProbeKind

MIN_GROUP = 20  # test rows a group needs to be scored
DEFAULT_BINS = 4


@dataclass(frozen=True)
class SubgroupSpec:
    """``column`` and, for numeric columns, the number of quantile bins."""

    column: str
    bins: int | None = None

    @property
    def label(self) -> str:
        return self.column if self.bins is None else f"{self.column}:{self.bins}"


def parse_subgroups(values: Sequence[str]) -> list[SubgroupSpec]:
    """``["sex", "age:4"]`` as specs; a bin count below 2 is refused."""
    out = []
    for raw in values:
        column, _, bins = str(raw).strip().partition(":")
        if not column:
            raise InvalidInputError(f"--subgroup {raw!r}: name a metadata column, e.g. sex or age:4")
        if bins:
            if not bins.isdigit() or int(bins) < 2:
                raise InvalidInputError(f"--subgroup {raw!r}: the bin count must be a whole number of at least 2")
            out.append(SubgroupSpec(column, int(bins)))
        else:
            out.append(SubgroupSpec(column))
    return out


def _numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)


def assign_groups(spec: SubgroupSpec, pool_meta: Sequence[dict], test_meta: Sequence[dict],
                  edges: list[float] | None = None) -> tuple[list[str | None], list[float] | None]:  # fmt: skip
    """The group of each test row (None: no value) and the bin edges (numeric columns: ``edges`` when given, e.g. a
    stored probe's, else the training rows' quantiles), refusing a column no row has (naming the ones that exist)."""
    known = sorted({k for m in [*pool_meta, *test_meta] for k in m})
    if not any(spec.column in m for m in [*pool_meta, *test_meta]):
        raise InvalidInputError(f"--subgroup {spec.column!r}: no such metadata column; the dataset has: "
                                f"{', '.join(known) or 'none (ingest with --metadata-column)'}")  # fmt: skip
    test_values = [m.get(spec.column) for m in test_meta]
    pool_values = [m.get(spec.column) for m in pool_meta]
    if not _numeric([*pool_values, *test_values]):
        if spec.bins is not None:
            raise InvalidInputError(f"--subgroup {spec.label}: {spec.column!r} is not numeric; drop the :N")
        return [None if v is None else str(v) for v in test_values], None
    if edges is None:
        train = np.array([v for v in pool_values if v is not None], dtype=np.float64)
        if not len(train):
            raise InvalidInputError(f"--subgroup {spec.label}: no training row has a value to place the bin edges")
        edges = sorted(set(np.quantile(train, np.linspace(0, 1, (spec.bins or DEFAULT_BINS) + 1))[1:-1].tolist()))
    names = _bin_names(edges)
    groups = [None if v is None else names[int(np.searchsorted(edges, float(v), side="right"))] for v in test_values]
    return groups, edges


def _bin_names(edges: list[float]) -> list[str]:
    bounds = ["", *[f"{e:g}" for e in edges], ""]
    return [f"< {bounds[1]}" if i == 0 else f">= {bounds[i]}" if i == len(edges) else f"[{bounds[i]}, {bounds[i + 1]})"
            for i in range(len(edges) + 1)]  # fmt: skip


def subgroup_metrics(
    spec: SubgroupSpec, groups: Sequence[str | None], edges: list[float] | None, y: np.ndarray, proba: np.ndarray,
    kind: ProbeKind, class_names: Sequence[str], W: np.ndarray,
    oof: tuple[np.ndarray, np.ndarray, Sequence[Rule]] | None = None,
    thresholds: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every group's macro AUC and balanced accuracy (and operating points when ``oof`` gives the out-of-fold rows
    and rules, or ``thresholds`` already chosen, e.g. a stored probe's) with CIs under the test rows' bootstrap
    weights ``W``, and the largest gap between scored groups."""
    names = sorted({g for g in groups if g is not None}, key=lambda g: (edges is None, g))
    if edges is not None:
        order = _bin_names(edges)
        names = [n for n in order if n in names]
    if len(names) < 2:
        raise InvalidInputError(f"--subgroup {spec.label}: the test rows hold {len(names)} group(s) of "
                                f"{spec.column!r}; subgroups need at least two")  # fmt: skip
    K = len(class_names)
    out_groups: list[dict[str, Any]] = []
    reps: dict[str, np.ndarray] = {}
    for name in names:
        idx = np.array([i for i, g in enumerate(groups) if g == name])
        entry: dict[str, Any] = {"group": name, "n": len(idx)}
        if len(idx) < MIN_GROUP:
            entry["flagged"] = f"fewer than {MIN_GROUP} test rows: not scored"
            out_groups.append(entry)
            continue
        point = replicate_metrics(y[idx], proba[idx], kind, K, np.ones((1, len(idx))))
        boot = replicate_metrics(y[idx], proba[idx], kind, K, W[:, idx])
        for metric in ("macro_auc", "balanced_accuracy"):
            value = float(point[metric][0])
            entry[metric] = ci_entry(value if np.isfinite(value) else None, boot[metric], len(W))
        if oof is not None:
            entry["operating_points"] = operating_points(oof[0], oof[1], y[idx], proba[idx], kind, class_names,
                                                         oof[2], W[:, idx])  # fmt: skip
        elif thresholds:
            entry["operating_points"] = points_at(thresholds, y[idx], proba[idx], kind, class_names, W[:, idx])
        reps[name] = boot["macro_auc"]
        out_groups.append(entry)
    scored = [g for g in out_groups if (g.get("macro_auc") or {}).get("value") is not None]
    if not scored:
        raise InvalidInputError(f"--subgroup {spec.label}: every group of {spec.column!r} has fewer than {MIN_GROUP} "
                                "test rows (or one class only); use fewer bins or a larger test set")  # fmt: skip
    out: dict[str, Any] = {"column": spec.column, "bins": spec.bins, "edges": edges, "min_size": MIN_GROUP,
                           "n_missing": sum(g is None for g in groups), "groups": out_groups}  # fmt: skip
    if len(scored) >= 2:
        best = max(scored, key=lambda g: g["macro_auc"]["value"])
        worst = min(scored, key=lambda g: g["macro_auc"]["value"])
        diff = best["macro_auc"]["value"] - worst["macro_auc"]["value"]
        out["largest_gap"] = {"metric": "macro_auc", "between": [best["group"], worst["group"]],
                              **ci_entry(diff, reps[best["group"]] - reps[worst["group"]], len(W))}  # fmt: skip
    return out


def check_subgroups(specs: Sequence[SubgroupSpec], pool_meta: Sequence[dict], test_meta: Sequence[dict]) -> None:
    """Before any fitting: each column exists, splits the test rows into at least two groups, and at least one
    group reaches the minimum size."""
    for spec in specs:
        groups, _ = assign_groups(spec, pool_meta, test_meta)
        sizes = {g: groups.count(g) for g in set(groups) if g is not None}
        if len(sizes) < 2:
            raise InvalidInputError(f"--subgroup {spec.label}: the test rows hold {len(sizes)} group(s) of "
                                    f"{spec.column!r}; subgroups need at least two")  # fmt: skip
        if max(sizes.values()) < MIN_GROUP:
            raise InvalidInputError(
                f"--subgroup {spec.label}: every group of {spec.column!r} has fewer than {MIN_GROUP} test rows "
                f"({sizes}); use fewer bins or a larger test set"
            )
