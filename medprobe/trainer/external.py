"""External test sets: a probe fitted (and its C, k or layer chosen) on the training dataset only, applied unchanged to
other datasets (another site, scanner or collection), each scored once with its own bootstrap CIs.

The checks run before anything is fitted: each external dataset has the task with the same class names, and shares
no image (by sha256) with the training rows unless overlap is allowed (and counted). Thresholds of the operating
points come from the training dataset's out-of-fold predictions, as for the in-dataset test rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.trainer.apply import apply_probe, write_applied
from medprobe.trainer.bootstrap import multiplicities
from medprobe.trainer.operating_points import operating_points, parse_rules
from medprobe.trainer.stored import StoredProbe
from medprobe.trainer.subgroups import assign_groups, parse_subgroups, subgroup_metrics

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore
    from medprobe.trainer.experiment import ExperimentSpec, ProbeOutcome


@dataclass
class ExternalResult:
    """One probe scored on one external dataset."""

    dataset: str
    probe_id: str  # the external row's probe id (its probe_results row names the dataset)
    applied_from: str  # the probe fitted on the training dataset
    layer: int
    n_members: int
    n_predicted: int
    n_missing_features: int
    n_labelled: int
    n_overlap: int
    metrics: dict[str, Any] | None
    image_hashes: list[str] = field(default_factory=list, repr=False)
    y: np.ndarray | None = field(default=None, repr=False)  # labels of the labelled images, in image order
    proba: np.ndarray | None = field(default=None, repr=False)  # their probabilities

    def doc(self) -> dict[str, Any]:
        """The result as a JSON-ready document."""
        return {k: getattr(self, k) for k in ("dataset", "probe_id", "applied_from", "layer", "n_members",
                                              "n_predicted", "n_missing_features", "n_labelled", "n_overlap",
                                              "metrics")}  # fmt: skip


def _members(store: FeatureStore, dataset: str, splits: Sequence[str] | None = None) -> set[str]:
    query = "SELECT image_hash FROM dataset_images WHERE dataset = ? AND row_kind = 'image'"
    params: list[Any] = [dataset]
    if splits is not None:
        query += " AND list_contains(?, split)"
        params.append(list(splits))
    return set(store.sql(query, params).column(0).to_pylist())


def check_external(store: FeatureStore, spec: ExperimentSpec, datasets: Sequence[str], allow_overlap: bool,
                   ) -> dict[str, int]:  # fmt: skip
    """Refuse external datasets that cannot be scored; returns each one's overlap with the training rows."""
    training = _members(store, spec.task.dataset, spec.pool_splits)
    overlaps: dict[str, int] = {}
    for dataset in datasets:
        if dataset == spec.task.dataset:
            raise InvalidInputError(f"--test-dataset {dataset!r} is the training dataset; its test split is scored "
                                    "anyway: name another dataset")  # fmt: skip
        rows = store.sql("SELECT class_names FROM tasks WHERE dataset = ? AND task = ?",
                         [dataset, spec.task.task]).to_pylist()  # fmt: skip
        if not rows:
            known = store.sql("SELECT DISTINCT dataset FROM dataset_images").column(0).to_pylist()
            if dataset not in known:
                raise NotFoundError(f"--test-dataset {dataset!r}: no such dataset; the datasets: {', '.join(known)}")
            tasks = store.sql("SELECT task FROM tasks WHERE dataset = ?", [dataset]).column(0).to_pylist()
            raise InvalidInputError(f"--test-dataset {dataset!r} has no task {spec.task.task!r} (its tasks: "
                                    f"{', '.join(tasks) or 'none'}); ingest it with that label column")  # fmt: skip
        if list(rows[0]["class_names"]) != list(spec.task.class_names):
            raise InvalidInputError(
                f"task {spec.task.task!r} has the classes {list(spec.task.class_names)} in {spec.task.dataset!r} but "
                f"{list(rows[0]['class_names'])} in --test-dataset {dataset!r}; the probe's outputs would not match"
            )
        shared = training & _members(store, dataset)
        if shared and not allow_overlap:
            raise InvalidInputError(
                f"{len(shared)} image(s) of --test-dataset {dataset!r} are training images of {spec.task.dataset!r} "
                "(the same sha256): an external test set must be unseen; remove them, or pass --allow-overlap"
            )
        overlaps[dataset] = len(shared)
    return overlaps


def external_subgroups(spec: ExperimentSpec, pool_meta: list[dict], meta: list[dict], y: np.ndarray,
                       proba: np.ndarray, kind: Any, oof: Any) -> list[dict[str, Any]]:  # fmt: skip
    """The run's subgroups on an external dataset's labelled images (numeric bins from the training rows); a column
    the external dataset cannot be split by is recorded with the reason, not dropped."""
    W = multiplicities(len(y), spec.n_boot, spec.seed)
    out = []
    for sg in parse_subgroups(spec.subgroups):
        try:
            groups, edges = assign_groups(sg, pool_meta, meta)
            out.append(subgroup_metrics(sg, groups, edges, y, proba, kind, list(spec.task.class_names), W, oof))
        except InvalidInputError as e:
            out.append({"column": sg.column, "bins": sg.bins, "undefined": str(e)})
    return out


def score_external(store: FeatureStore, spec: ExperimentSpec, outcome: ProbeOutcome, dataset: str, run_id: str,
                   n_overlap: int = 0) -> ExternalResult:  # fmt: skip
    """Apply ``outcome``'s probe to every image of ``dataset``; write its ``probe_results`` and ``predictions``."""
    if outcome.probe is None or outcome.C is None:
        raise InvalidInputError("--test-dataset needs fitted probes (--method probe), not kNN")
    stored = StoredProbe(probe_id=outcome.probe_id, run_id=run_id, feature_set_id=spec.feature_set_id,
                         layer=outcome.layer, dataset=spec.task.dataset, task=spec.task.task,
                         class_names=list(spec.task.class_names), C=outcome.C, probe=outcome.probe)  # fmt: skip
    applied = apply_probe(store, stored, dataset, n_boot=spec.n_boot, seed=spec.seed)
    keep = [i for i, v in enumerate(applied.y) if v is not None]
    y = np.array([applied.y[i] for i in keep]) if keep else None
    if applied.metrics is not None and y is not None and outcome.oof_y is not None and outcome.oof_proba is not None:
        applied.metrics["operating_points"] = operating_points(
            outcome.oof_y, outcome.oof_proba, y, applied.proba[keep], outcome.kind, list(spec.task.class_names),
            parse_rules(spec.operating_points), multiplicities(len(keep), spec.n_boot, spec.seed),
        )  # fmt: skip
    if applied.metrics is not None:
        applied.metrics["n_overlap"] = n_overlap
        if spec.subgroups and y is not None:
            oof = (outcome.oof_y, outcome.oof_proba, parse_rules(spec.operating_points)) if (
                outcome.oof_y is not None and outcome.oof_proba is not None) else None  # fmt: skip
            applied.metrics["subgroups"] = external_subgroups(
                spec, outcome.pool_metadata or [], [applied.metadata[i] for i in keep], y, applied.proba[keep],
                outcome.kind, oof,
            )
    base = {
        "run_id": run_id, "probe_id": outcome.probe_id, "feature_set_id": spec.feature_set_id, "layer": outcome.layer,
        "dataset": dataset, "task": spec.task.task, "solver": outcome.solver or spec.solver, "c": outcome.C,
        "c_grid": [float(c) for c in spec.c_grid], "selection": outcome.selection,
        "cv_scores": json.dumps(outcome.cv_scores), "train_fraction": outcome.setting.fraction,
        "seed": outcome.setting.seed, "n_train": outcome.n_train, "n_test": 0,
        "class_names": list(spec.task.class_names), "metrics": "{}", "fit_seconds": 0.0,
        "weights_uri": outcome.weights_uri, "method": outcome.method,
    }  # fmt: skip
    probe_id = write_applied(store, applied, run_id, base)
    return ExternalResult(
        dataset=dataset, probe_id=probe_id, applied_from=outcome.probe_id, layer=outcome.layer,
        n_members=applied.n_members, n_predicted=len(applied.image_hashes),
        n_missing_features=applied.n_missing_features, n_labelled=applied.labelled, n_overlap=n_overlap,
        metrics=applied.metrics, image_hashes=[applied.image_hashes[i] for i in keep], y=y,
        proba=applied.proba[keep] if keep else None,
    )  # fmt: skip
