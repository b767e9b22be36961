"""Helpers shared by tests that need a second dataset over the synthetic store's images."""

from __future__ import annotations

from medprobe.featurestore import FeatureStore
from medprobe.schemas import DatasetImageRow, DatasetRow, TaskRow


def copy_dataset(store: FeatureStore, name: str, splits: tuple[str, ...], classes: list[str] | None = None,
                 task: str = "grade") -> list[dict]:  # fmt: skip
    """A dataset ``name`` holding the synth dataset's images of ``splits`` (all as test rows), with the grade task."""
    rows = store.sql("SELECT * FROM dataset_images WHERE dataset = 'synth' AND list_contains(?, split) ORDER BY "
                     "image_hash", [list(splits)]).to_pylist()  # fmt: skip
    store.append("datasets", [DatasetRow(dataset=name, format="csv", source=name, split_policy="shipped")])
    store.append("tasks", [TaskRow(dataset=name, task=task, type="multiclass", label_columns=["grade"],
                                   class_names=classes or ["none", "mild", "severe"],
                                   primary_metric="macro_auc")])  # fmt: skip
    store.append("dataset_images", [DatasetImageRow(**{**{k: v for k, v in r.items() if k not in ("ingested_at",
                 "source")}, "dataset": name, "split": "test"}) for r in rows])  # fmt: skip
    return rows
