"""Everything the trainer reads from the store: the feature set, the task, labels, splits and features."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.schemas.tables import FeatureSetRow, TaskRow
from medprobe.trainer.solvers.base import ProbeKind

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


def resolve_feature_set(
    store: FeatureStore,
    feature_set_id: str | None = None,
    model: str | None = None,
    prompt: str | None = None,
    pooling: str | None = None,
) -> FeatureSetRow:
    """The feature set named by id, or the single one matching ``model`` (+ ``prompt``, ``pooling``). Token grids
    (pooling ``tokens``, ``extract --tokens``) are for ``heatmap``, never a probe's features."""
    if feature_set_id:
        row = store.feature_set(feature_set_id)
        if row.pooling == "tokens":
            raise InvalidInputError(f"feature set {feature_set_id} holds token grids (extract --tokens), one row of "
                                    "every token per image: probes train on a pooled feature set of the same model; "
                                    "the grids are for medprobe heatmap")  # fmt: skip
        return row
    if not model:
        raise InvalidInputError("name a feature set with --feature-set ID, or with --model (and --prompt/--pooling)")
    rows = [r for r in store.table("feature_sets").to_pylist() if r["pooling"] != "tokens"]
    match = [
        r
        for r in rows
        if r["model_id"] == model
        and (prompt is None or r["prompt"] == prompt)
        and (pooling is None or r["pooling"] == pooling)
    ]
    if not match:
        have = "; ".join(
            f"{r['feature_set_id']} (model {r['model_id']}, pooling {r['pooling']}, prompt {r['prompt']!r})"
            for r in rows
        )
        raise NotFoundError(
            f"no feature set for model {model!r} prompt {prompt!r} pooling {pooling!r}; the store has: {have or 'none'}"
        )
    if len(match) > 1:
        ids = ", ".join(f"{r['feature_set_id']} (pooling {r['pooling']}, prompt {r['prompt']!r})" for r in match)
        raise InvalidInputError(f"{len(match)} feature sets match model {model!r}: {ids}; pass --feature-set ID")
    return store.feature_set(match[0]["feature_set_id"])


def resolve_task(store: FeatureStore, task: str, dataset: str | None = None) -> TaskRow:
    """The task row for ``task`` (in ``dataset`` when given); NotFoundError lists the tasks that exist."""
    rows = store.table("tasks").to_pylist()
    match = [r for r in rows if r["task"] == task and (dataset is None or r["dataset"] == dataset)]
    if not match:
        have = ", ".join(f"{r['dataset']}/{r['task']} ({r['type']})" for r in rows)
        where = f" in dataset {dataset!r}" if dataset else ""
        raise NotFoundError(f"unknown task {task!r}{where}; the store has: {have or 'no tasks (ingest a dataset)'}")
    if len(match) > 1:
        raise InvalidInputError(
            f"task {task!r} exists in datasets {[r['dataset'] for r in match]}: pass --dataset to choose"
        )
    return TaskRow(**match[0])


def probe_kind(task: TaskRow) -> ProbeKind:
    """binary -> binary, multiclass / ordinal -> multinomial, multilabel -> independent sigmoids."""
    if task.type == "multilabel":
        return "multilabel"
    return "binary" if len(task.class_names) == 2 else "multiclass"


@dataclass
class TaskData:
    """Labelled, extracted images of one task: rows in a fixed order (sorted by image hash)."""

    task: TaskRow
    kind: ProbeKind
    image_hashes: list[str]
    split: np.ndarray  # str per row
    groups: np.ndarray | None  # patient/group id per row, or None
    y: np.ndarray  # class index (rows,) or indicators (rows, findings)
    n_missing_labels: int = 0
    n_missing_features: int = 0
    metadata: list[dict[str, Any]] = field(default_factory=list)  # per row: the image's metadata in this dataset

    @property
    def class_names(self) -> list[str]:
        return list(self.task.class_names)

    def rows(self, split: str | tuple[str, ...]) -> np.ndarray:
        splits = (split,) if isinstance(split, str) else split
        return np.flatnonzero(np.isin(self.split, splits))


def encode_label(value: Any, task: TaskRow, kind: ProbeKind, image_hash: str) -> Any:
    """A stored label as the trainer's target: a class index, or a 0/1 vector of findings (multilabel)."""
    names = list(task.class_names)
    if kind == "multilabel":
        findings = value if isinstance(value, list) else [value]
        unknown = [f for f in findings if str(f) not in names]
        if unknown:
            raise InvalidInputError(
                f"image {image_hash[:16]}: findings {unknown} of task {task.task!r} are not among {names}"
            )
        out = np.zeros(len(names), dtype=int)
        out[[names.index(str(f)) for f in findings]] = 1
        return out
    if str(value) not in names:
        raise InvalidInputError(
            f"image {image_hash[:16]}: label {value!r} of task {task.task!r} is not one of its classes {names}"
        )
    return names.index(str(value))


def load_task_data(
    store: FeatureStore, task: TaskRow, feature_set_id: str, layers: list[int], *, allow_missing: bool = False
) -> TaskData:
    """Images of the task's dataset that have labels and features for every layer in ``layers``.

    Images with features but no label, or with a label but no features, are refused with their counts
    unless ``allow_missing`` (then they are left out and counted).
    """
    kind = probe_kind(task)
    rows = store.sql(
        "SELECT image_hash, split, group_id, labels, metadata FROM dataset_images WHERE dataset = ? "
        "ORDER BY image_hash",
        [task.dataset],
    ).to_pylist()
    if not rows:
        raise NotFoundError(f"dataset {task.dataset!r} has no images in the store")
    have = store.existing(feature_set_id, layers)
    per_layer: dict[int, set[str]] = {}
    for layer, h in zip(have.column("layer").to_pylist(), have.column("image_hash").to_pylist(), strict=True):
        per_layer.setdefault(layer, set()).add(h)
    extracted = set.intersection(*(per_layer.get(x, set()) for x in layers)) if layers else set()
    in_dataset = [r for r in rows if r["image_hash"] in extracted]
    n_no_features = len(rows) - len(in_dataset)
    labelled: list[tuple[dict[str, Any], Any]] = []
    n_no_label = 0
    for r in in_dataset:
        value = json.loads(r["labels"] or "{}").get(task.task)
        if value is None or value == []:
            if kind == "multilabel" and value == []:
                labelled.append((r, []))  # an image with no findings is a labelled negative
                continue
            n_no_label += 1
            continue
        labelled.append((r, value))
    if not labelled:
        raise InvalidInputError(
            f"no image of dataset {task.dataset!r} has both a {task.task!r} label and features in {feature_set_id} "
            f"for layers {layers} ({n_no_features} images lack features, {n_no_label} lack labels): run extract first"
        )
    problems = []
    if n_no_label:
        problems.append(f"{n_no_label} of {len(in_dataset)} extracted images have no {task.task!r} label")
    if n_no_features:
        problems.append(
            f"{n_no_features} of {len(rows)} images of dataset {task.dataset!r} have no features in {feature_set_id} "
            f"for layer(s) {layers}"
        )
    if problems and not allow_missing:
        raise InvalidInputError("; ".join(problems) + ": pass --allow-missing to train on the rest")
    y = np.array([encode_label(v, task, kind, r["image_hash"]) for r, v in labelled])
    groups = [r["group_id"] for r, _ in labelled]
    return TaskData(
        task=task,
        kind=kind,
        image_hashes=[r["image_hash"] for r, _ in labelled],
        split=np.array([r["split"] for r, _ in labelled]),
        groups=None if all(g is None for g in groups) else np.array([str(g) for g in groups]),
        y=y,
        n_missing_labels=n_no_label,
        n_missing_features=n_no_features,
        metadata=[json.loads(r["metadata"]) if r.get("metadata") else {} for r, _ in labelled],
    )


def read_features(
    store: FeatureStore, feature_set_id: str, layers: list[int], image_hashes: list[str]
) -> dict[int, np.ndarray]:
    """Features of ``layers`` for ``image_hashes`` as float32; refuses NaN/Inf and names the rows."""
    raw = store.read_layers(feature_set_id, layers, image_hashes)
    out = {}
    for layer in layers:
        X = np.asarray(raw[layer], dtype=np.float32)
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            names = [image_hashes[i][:16] for i in np.flatnonzero(bad)[:5]]
            raise InvalidInputError(
                f"feature set {feature_set_id} layer {layer}: {int(bad.sum())} rows hold NaN/Inf (images {names}"
                f"{'...' if bad.sum() > 5 else ''}); re-extract them (e.g. with fp32 compute)"
            )
        out[layer] = X
    return out
