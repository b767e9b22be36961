"""Stored probes read back: the safetensors a run wrote (weights and standardisation), as a probe that predicts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np

from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.trainer.solvers.base import FittedProbe, ProbeKind

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

WEIGHT_KEYS = ("coef", "intercept", "mean", "scale")


def weights_bytes(probe: FittedProbe, meta: dict[str, str]) -> bytes:
    """A probe as safetensors: coef and intercept (standardised units), mean and scale (raw -> standardised), kept
    in the dtype they were fitted in, so a probe read back gives the stored predictions exactly."""
    from safetensors.numpy import save

    tensors = {key: np.ascontiguousarray(getattr(probe, key)) for key in WEIGHT_KEYS}
    return save(tensors, metadata=meta)


@dataclass
class StoredProbe:
    """A probe of ``probe_results`` with its weights: ``predict_proba`` on raw features of its feature set and layer."""

    probe_id: str
    run_id: str
    feature_set_id: str
    layer: int
    dataset: str
    task: str
    class_names: list[str]
    C: float
    probe: FittedProbe
    # the operating points chosen when it was fitted: {class: [{rule, threshold, n_oof}]} (empty: none stored)
    thresholds: dict[str, list[dict]] = field(default_factory=dict)
    # the numeric subgroup bins it was evaluated with, by "column:N" (predict reuses them)
    subgroup_edges: dict[str, list[float]] = field(default_factory=dict)

    @property
    def kind(self) -> ProbeKind:
        """binary, multiclass or multilabel."""
        return self.probe.kind

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities for raw feature rows ``X`` (rows x hidden)."""
        return self.probe.predict_proba(X)


def load_probe(store: FeatureStore, probe_id: str) -> StoredProbe:
    """The stored probe ``probe_id`` (a ``probe_results`` row with weights); NotFoundError when there is none, and
    InvalidInputError for kNN and zero-shot results, which have no weights."""
    from safetensors.numpy import load

    rows = store.sql("SELECT * FROM probe_results WHERE probe_id = ?", [probe_id]).to_pylist()
    if not rows:
        raise NotFoundError(f"no probe {probe_id!r} in probe_results; list them with: medprobe sql \"SELECT "
                            "probe_id, run_id, layer, task FROM probe_results\"")  # fmt: skip
    row = rows[0]
    if not row["weights_uri"]:
        raise InvalidInputError(f"probe {probe_id!r} is a {row['method']} result: it has no weights to apply")
    tensors = load(store.read_bytes(row["weights_uri"]))
    missing = [k for k in WEIGHT_KEYS if k not in tensors]
    if missing:
        raise InvalidInputError(f"stored probe {row['weights_uri']} lacks {missing}; it was not written by medprobe")
    meta = _metadata(store.read_bytes(row["weights_uri"]))
    n_out = tensors["coef"].shape[0]
    kind = meta.get("kind") or ("binary" if n_out == 1 else "multiclass")
    coef, intercept, mean, scale = (tensors[k].astype(np.float64) for k in WEIGHT_KEYS)
    probe = FittedProbe(kind=cast(ProbeKind, kind), coef=coef, intercept=intercept, mean=mean, scale=scale,
                        C=float(row["c"]))  # fmt: skip
    metrics = json.loads(row["metrics"] or "{}")
    points = metrics.get("operating_points") or {}
    edges = {(b["column"] if b.get("bins") is None else f"{b['column']}:{b['bins']}"): b["edges"]
             for b in metrics.get("subgroups") or [] if b.get("edges")}  # fmt: skip
    thresholds = {c: [{k: p[k] for k in ("rule", "threshold", "n_oof") if k in p} for p in ps]
                  for c, ps in points.items()}  # fmt: skip
    return StoredProbe(probe_id=probe_id, run_id=row["run_id"], feature_set_id=row["feature_set_id"],
                       layer=int(row["layer"]), dataset=row["dataset"], task=row["task"],
                       class_names=list(row["class_names"]), C=float(row["c"]), probe=probe,
                       thresholds=thresholds, subgroup_edges=edges)  # fmt: skip


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its JSON header)."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    return dict(header.get("__metadata__") or {})
