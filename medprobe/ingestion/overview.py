"""What the store knows about datasets: their latest definition, tasks, split sizes and class counts."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medprobe.errors import NotFoundError
from medprobe.ingestion.records import natural_key

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


@dataclass
class DatasetOverview:
    """One dataset as ``medprobe datasets`` shows it."""

    dataset: str
    format: str
    source: str
    split_policy: str
    tasks: list[dict] = field(default_factory=list)  # task, type, class_names, primary_metric
    split_sizes: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    class_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # task -> split -> class -> n


def dataset_overviews(store: FeatureStore, dataset: str | None = None) -> list[DatasetOverview]:
    """Overview of every dataset (or only ``dataset``; NotFoundError lists the known ones)."""
    where, params = ("WHERE dataset = ?", [dataset]) if dataset else ("", [])
    latest = store.sql(
        f"SELECT dataset, format, source, split_policy FROM datasets {where} "
        "QUALIFY row_number() OVER (PARTITION BY dataset ORDER BY created_at DESC) = 1 ORDER BY dataset",
        params,
    ).to_pylist()
    if dataset and not latest:
        known = store.sql("SELECT DISTINCT dataset FROM datasets ORDER BY 1").column(0).to_pylist()
        raise NotFoundError(f"no dataset {dataset!r}; the store has: {', '.join(known) or 'none'}")
    out = {r["dataset"]: DatasetOverview(**r) for r in latest}
    for t in store.sql(
        f"SELECT dataset, task, type, class_names, primary_metric FROM tasks {where} ORDER BY dataset, task", params
    ).to_pylist():
        if t["dataset"] in out:
            out[t["dataset"]].tasks.append({k: v for k, v in t.items() if k != "dataset"})
    rows = store.sql(f"SELECT dataset, split, group_id, labels FROM dataset_images {where}", params)
    sizes: dict[str, Counter] = defaultdict(Counter)
    groups: dict[str, set] = defaultdict(set)
    counts: dict[str, dict[str, dict[str, Counter]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(Counter)))
    for name, split, group, labels in zip(*(rows.column(c).to_pylist() for c in range(4)), strict=True):
        sizes[name][split] += 1
        if group is not None:
            groups[name].add(group)
        for task, value in json.loads(labels).items():
            for v in value if isinstance(value, list) else [value]:
                counts[name][task][split][str(v)] += 1
    order = {"train": 0, "val": 1, "test": 2}
    for name, ov in out.items():
        ov.split_sizes = dict(sorted(sizes[name].items(), key=lambda kv: order.get(kv[0], 9)))
        ov.groups = len(groups[name])
        ov.class_counts = {
            task: {
                split: dict(sorted(c.items(), key=lambda kv: natural_key(kv[0])))
                for split, c in sorted(per_split.items(), key=lambda kv: order.get(kv[0], 9))
            }
            for task, per_split in counts[name].items()
        }
    return list(out.values())
