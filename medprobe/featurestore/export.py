"""Plain-NumPy export of one layer of a feature set."""

from __future__ import annotations

import io
from dataclasses import dataclass

import fsspec
import numpy as np

from medprobe.errors import NotFoundError
from medprobe.featurestore.store import FeatureStore


@dataclass
class ExportResult:
    rows: int
    hidden: int
    missing: int  # dataset images (in the selection) without activations for this layer


def select_rows(
    store: FeatureStore, feature_set_id: str, layer: int, dataset: str | None, split: str | None
) -> tuple[list[str], list[str] | None, int]:
    """Image hashes (sorted) of the selection that have activations, their splits, and how many lack them."""
    store.feature_set(feature_set_id)
    stored_layers = store.layers(feature_set_id)
    if layer not in stored_layers:
        raise NotFoundError(
            f"feature set {feature_set_id} has no rows for layer {layer}; stored layers: {stored_layers or 'none'}"
        )
    if dataset is None:
        if split is not None:
            raise NotFoundError("--split needs --dataset (splits belong to datasets)")
        hashes = (
            store.catalog.query(
                "SELECT image_hash FROM activations WHERE feature_set_id = ? AND layer = ? ORDER BY image_hash",
                [feature_set_id, layer],
            )
            .column(0)
            .to_pylist()
        )
        return hashes, None, 0
    known = store.catalog.query("SELECT DISTINCT dataset FROM dataset_images ORDER BY 1").column(0).to_pylist()
    if dataset not in known:
        raise NotFoundError(f"unknown dataset {dataset!r}; datasets: {', '.join(known) or 'none'}")
    t = store.catalog.query(
        """
        SELECT d.image_hash, d.split, a.image_hash IS NOT NULL AS present
        FROM dataset_images d
        LEFT JOIN (SELECT image_hash FROM activations WHERE feature_set_id = $fs AND layer = $layer) a
          USING (image_hash)
        WHERE d.dataset = $dataset AND ($split IS NULL OR d.split = $split)
        ORDER BY d.image_hash
        """,
        {"fs": feature_set_id, "layer": layer, "dataset": dataset, "split": split},
    ).to_pydict()
    keep = [i for i, p in enumerate(t["present"]) if p]
    return [t["image_hash"][i] for i in keep], [t["split"][i] for i in keep], len(t["present"]) - len(keep)


def export_npz(
    store: FeatureStore,
    feature_set_id: str,
    layer: int,
    out: str,
    *,
    dataset: str | None = None,
    split: str | None = None,
) -> ExportResult:
    """Write ``X`` (rows x hidden) and ``image_hash`` (same order; plus ``split`` with a dataset) to ``out``."""
    hashes, splits, missing = select_rows(store, feature_set_id, layer, dataset, split)
    if not hashes:
        raise NotFoundError(
            f"no activations for feature set {feature_set_id} layer {layer}"
            + (f" in dataset {dataset}" + (f" split {split}" if split else "") if dataset else "")
        )
    x = store.read(feature_set_id, layer, hashes)
    arrays = {"X": x, "image_hash": np.asarray(hashes)}
    if splits is not None:
        arrays["split"] = np.asarray(splits)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy types **kwds as the allow_pickle flag
    with fsspec.open(out, "wb") as f:
        f.write(buf.getvalue())
    return ExportResult(rows=len(hashes), hidden=int(x.shape[1]), missing=missing)
