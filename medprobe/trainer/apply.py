"""A stored probe applied to a dataset: its weights and standardisation read back, the dataset's rows of the probe's
feature set and layer scored, the predictions (and metrics with CIs where the dataset has labels for the task)
written as a new ``probe_results`` row that names the probe it applies (``applied_from``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.featurestore import new_id, package_versions
from medprobe.schemas import PredictionRow, ProbeResultRow, TaskRow
from medprobe.trainer.bootstrap import metrics_with_ci, multiplicities
from medprobe.trainer.data import encode_label
from medprobe.trainer.defaults import N_BOOT
from medprobe.trainer.operating_points import points_at
from medprobe.trainer.stored import StoredProbe
from medprobe.trainer.subgroups import assign_groups, parse_subgroups, subgroup_metrics

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


@dataclass
class Applied:
    """What a stored probe says about a dataset's images."""

    probe: StoredProbe
    dataset: str
    splits: list[str]
    image_hashes: list[str]  # the images scored (extracted members), by image hash
    proba: np.ndarray  # (images, classes)
    y: list[Any]  # encoded label per image, None where the image has no label for the task
    n_members: int
    n_missing_features: int
    metrics: dict[str, Any] | None = None  # over the labelled images, with bootstrap CIs
    labelled: int = 0
    metadata: list[dict[str, Any]] = field(default_factory=list)  # per scored image: its metadata in the dataset
    extra: dict[str, Any] = field(default_factory=dict)


def _task_row(store: FeatureStore, probe: StoredProbe, dataset: str) -> TaskRow | None:
    """The dataset's row of the probe's task (None: the dataset does not have the task); other class names are
    refused naming both lists."""
    rows = store.sql("SELECT * FROM tasks WHERE dataset = ? AND task = ?", [dataset, probe.task]).to_pylist()
    if not rows:
        return None
    task = TaskRow(**rows[0])
    if list(task.class_names) != list(probe.class_names):
        raise InvalidInputError(
            f"task {probe.task!r} of dataset {dataset!r} has the classes {list(task.class_names)}, the probe "
            f"{probe.probe_id} was trained on {list(probe.class_names)}; the labels cannot be compared"
        )
    return task


def apply_probe(
    store: FeatureStore, probe: StoredProbe, dataset: str, *, splits: list[str] | None = None, n_boot: int = N_BOOT,
    seed: int = 0, subgroups: list[str] | None = None,
) -> Applied:  # fmt: skip
    """Score the images of ``dataset`` (``splits`` only, when given) that have rows of the probe's feature set and
    layer; metrics with CIs over those that have a label for the probe's task."""
    query = "SELECT image_hash, split, labels, metadata FROM dataset_images WHERE dataset = ? AND row_kind = 'image'"
    params: list[Any] = [dataset]
    if splits:
        query += " AND list_contains(?, split)"
        params.append(splits)
    members = store.sql(query + " ORDER BY image_hash", params).to_pylist()
    if not members:
        where = f" in split(s) {', '.join(splits)}" if splits else ""
        raise NotFoundError(f"dataset {dataset!r} has no images{where}; `medprobe datasets` lists what is stored")
    have = set(store.existing(probe.feature_set_id, [probe.layer]).column("image_hash").to_pylist())
    scored = [m for m in members if m["image_hash"] in have]
    if not scored:
        model = store.sql("SELECT model_id FROM feature_sets WHERE feature_set_id = ?", [probe.feature_set_id])
        model_id = model.column(0)[0].as_py() if model.num_rows else "the probe's model"
        raise InvalidInputError(
            f"none of the {len(members)} images of dataset {dataset!r} has features in {probe.feature_set_id} at "
            f"layer {probe.layer}: run `medprobe extract -d {dataset} -m {model_id}` (with the probe's prompt and "
            "pooling) first"
        )
    hashes = [m["image_hash"] for m in scored]
    proba = probe.predict_proba(store.read(probe.feature_set_id, probe.layer, hashes))
    task = _task_row(store, probe, dataset)
    y: list[Any] = []
    for m in scored:
        value = json.loads(m["labels"] or "{}").get(probe.task)
        if task is None or value is None or (value == [] and probe.kind != "multilabel"):
            y.append(None)
        else:
            y.append(encode_label(value, task, probe.kind, m["image_hash"]))
    out = Applied(probe, dataset, list(splits or []), hashes, proba, y, len(members), len(members) - len(scored))
    out.metadata = [json.loads(m["metadata"]) if m.get("metadata") else {} for m in scored]
    keep = [i for i, v in enumerate(y) if v is not None]
    out.labelled = len(keep)
    if keep:
        truth = np.array([y[i] for i in keep])
        out.metrics = metrics_with_ci(truth, proba[keep], probe.kind, list(probe.class_names), n_boot=n_boot,
                                      seed=seed)  # fmt: skip
        if probe.thresholds:  # the stored probe's operating points, at its own thresholds
            W = multiplicities(len(keep), n_boot, seed)
            out.metrics["operating_points"] = points_at(probe.thresholds, truth, proba[keep], probe.kind,
                                                        list(probe.class_names), W)  # fmt: skip
        if subgroups:
            out.metrics["subgroups"] = _subgroups(probe, subgroups, [out.metadata[i] for i in keep], truth,
                                                  proba[keep], multiplicities(len(keep), n_boot, seed))  # fmt: skip
    return out


def _subgroups(probe: StoredProbe, columns: list[str], meta: list[dict], y: np.ndarray, proba: np.ndarray,
               W: np.ndarray) -> list[dict[str, Any]]:  # fmt: skip
    """The groups of the labelled images; numeric bins are the probe's own when it was evaluated with that subgroup,
    else the quantiles of these images."""
    out = []
    for sg in parse_subgroups(columns):
        groups, edges = assign_groups(sg, meta, meta, probe.subgroup_edges.get(sg.label))
        out.append(subgroup_metrics(sg, groups, edges, y, proba, probe.kind, list(probe.class_names), W,
                                    thresholds=probe.thresholds))  # fmt: skip
    return out


def write_applied(store: FeatureStore, applied: Applied, run_id: str, base: dict[str, Any] | None = None) -> str:
    """Append the ``probe_results`` row (a new probe id, ``applied_from`` the stored probe; the other fields from
    ``base``, default the stored probe's row) and one ``predictions`` row per scored image, in one transaction (an
    enclosing one, when there is one); returns the new probe id."""
    source = base if base is not None else store.sql(
        "SELECT * FROM probe_results WHERE probe_id = ?", [applied.probe.probe_id]
    ).to_pylist()[0]  # fmt: skip
    probe_id = new_id("probe")
    metrics = dict(applied.metrics or {})
    metrics.update({"applied_to": applied.dataset, "splits": applied.splits, "n_predicted": len(applied.image_hashes),
                    "n_missing_features": applied.n_missing_features, "n_labelled": applied.labelled})  # fmt: skip
    fields = {k: v for k, v in source.items() if k != "created_at"}  # the probe as trained: C, grid, selection, ...
    fields.update(run_id=run_id, probe_id=probe_id, dataset=applied.dataset, n_test=applied.labelled,
                  metrics=json.dumps(metrics), fit_seconds=0.0, applied_from=applied.probe.probe_id,
                  versions=json.dumps(package_versions(), sort_keys=True))  # fmt: skip
    row = ProbeResultRow(**fields)
    preds = [
        PredictionRow(
            run_id=run_id,
            probe_id=probe_id,
            image_hash=h,
            y_true=json.dumps(_plain(v)),
            probabilities=[float(p) for p in ps],
        )
        for h, v, ps in zip(applied.image_hashes, applied.y, applied.proba, strict=True)
    ]
    with store.transaction():
        store.append("probe_results", [row])
        store.append("predictions", preds)
    return probe_id


def _plain(value: Any) -> Any:
    return None if value is None else (value.tolist() if np.ndim(value) else int(value))
