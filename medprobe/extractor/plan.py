"""Which images of an extraction are still to do: the store says which (feature set, layer, image) rows exist.

The plan keeps only the images that miss at least one wanted row; the list lives in Arrow arrays (no per-row
Python objects, so forked DataLoader workers do not copy it page by page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from medprobe.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


@dataclass
class Plan:
    """The images of one extraction still to do, in image-hash order."""

    todo: pa.Table  # image_hash, uri, n_have (how many wanted (feature set, layer) rows exist already)
    n_selected: int  # images of the dataset selection (after sharding)
    n_complete: int  # of those, images with every wanted row present (skipped)
    present: dict[str, set[tuple[str, int]]] = field(default_factory=dict)  # partial images: rows that exist

    @property
    def n_todo(self) -> int:
        return self.todo.num_rows


def shard_of(image_hash: str, n_shards: int) -> int:
    """The fixed shard of an image: its hash's first 32 bits modulo ``n_shards``."""
    return int(image_hash[:8], 16) % n_shards


def check_dataset(store: FeatureStore, dataset: str) -> None:
    """Raise NotFoundError naming the known datasets unless ``dataset`` has images in the store (InvalidInputError
    for a dataset of VQA items, whose rows are not images)."""
    rows = store.sql("SELECT row_kind, count(*) AS n FROM dataset_images WHERE dataset = ? GROUP BY 1", [dataset])
    counts = {r["row_kind"]: r["n"] for r in rows.to_pylist()}
    if counts.get("image"):
        return
    if counts:
        raise InvalidInputError(
            f"dataset {dataset!r} holds VQA items, not images (row kind {', '.join(sorted(counts))}): its rows are the "
            "answer-position states `medprobe vqa run --save-activations` stores; probe them with `medprobe sweep`"
        )
    known = store.sql("SELECT DISTINCT dataset FROM dataset_images ORDER BY 1").column("dataset").to_pylist()
    raise NotFoundError(
        f"unknown dataset {dataset!r} (no images in the store); known datasets: {', '.join(known) or 'none'}; "
        "ingest it first"
    )


def plan_images(
    store: FeatureStore,
    dataset: str,
    feature_set_ids: Sequence[str],
    layers: Sequence[int],
    *,
    splits: Sequence[str] | None = None,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
) -> Plan:
    """Which images of ``dataset`` (optionally only ``splits``, one ``(index, count)`` shard, the first
    ``limit``) miss at least one (feature set, layer) row; partial images carry the rows they have."""
    check_dataset(store, dataset)
    want = len(feature_set_ids) * len(layers)
    table = store.coverage(dataset, feature_set_ids, layers, splits)
    if shard is not None:
        index, count = shard
        mask = [shard_of(h, count) == index for h in table.column("image_hash").to_pylist()]
        table = table.filter(pa.array(mask, pa.bool_()))
    if limit is not None:
        table = table.slice(0, limit)
    n_selected = table.num_rows
    n_have = table.column("n_have").to_pylist()
    todo = table.filter(pa.array([n < want for n in n_have], pa.bool_()))
    partial = [h for h, n in zip(table.column("image_hash").to_pylist(), n_have, strict=True) if 0 < n < want]
    return Plan(
        todo=todo,
        n_selected=n_selected,
        n_complete=n_selected - todo.num_rows,
        present=_present_rows(store, partial, feature_set_ids, layers),
    )


def _present_rows(
    store: FeatureStore, hashes: list[str], feature_set_ids: Sequence[str], layers: Sequence[int]
) -> dict[str, set[tuple[str, int]]]:
    if not hashes:
        return {}
    rows = store.committed_rows(hashes, feature_set_ids, layers)
    out: dict[str, set[tuple[str, int]]] = {h: set() for h in hashes}
    for h, fs, layer in zip(*(rows.column(c).to_pylist() for c in range(3)), strict=True):
        out[h].add((fs, int(layer)))
    return out
