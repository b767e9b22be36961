"""One probe experiment on the store: load, select C and refit (training pool), test once, write results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from medprobe.errors import InvalidInputError
from medprobe.featurestore import new_id, package_versions
from medprobe.progress import progress_bar
from medprobe.schemas import SPLITS
from medprobe.schemas.tables import PredictionRow, ProbeResultRow, TaskRow
from medprobe.schemas.vocab import TestSplit
from medprobe.trainer.bootstrap import N_BOOT, metrics_with_ci, multiplicities
from medprobe.trainer.calibration import fit_temperature, with_temperature
from medprobe.trainer.data import TaskData, load_task_data, read_features
from medprobe.trainer.defaults import DEFAULT_C_GRID
from medprobe.trainer.knn import DEFAULT_K_GRID
from medprobe.trainer.knn_protocol import fit_knn_protocol
from medprobe.trainer.operating_points import DEFAULT_OPERATING_POINTS, operating_points, parse_rules
from medprobe.trainer.protocol import ProtocolResult, ProtocolTiming, Setting, fit_protocol
from medprobe.trainer.solvers import get_solver
from medprobe.trainer.solvers.base import FittedProbe, ProbeKind
from medprobe.trainer.stored import weights_bytes
from medprobe.trainer.subgroups import assign_groups, check_subgroups, parse_subgroups, subgroup_metrics

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


@dataclass
class ExperimentSpec:
    """What to fit: a feature set's layers on a task, under one protocol."""

    feature_set_id: str
    task: TaskRow
    layers: list[int]
    solver: str = "torch"
    c_grid: Sequence[float] = DEFAULT_C_GRID
    selection: str = "cv"
    grid: str = "adaptive"  # adaptive: climb C (warm-started) and stop once the CV score has turned; full: every C
    n_splits: int = 5
    test_split: str = "test"  # held out and scored once; the other splits form the training pool
    fractions: Sequence[float] = (1.0,)
    seeds: Sequence[int] = (0,)
    class_weight: str | None = None
    allow_missing: bool = False
    allow_group_overlap: bool = False  # train anyway when a patient group is in both the training and test rows
    n_boot: int = N_BOOT
    seed: int = 0
    device: str | None = None
    select_by: str | None = None  # the metric that chooses C (None: the task's primary metric)
    solver_options: dict = field(default_factory=dict)
    method: str = "probe"  # probe: logistic regression; knn: weighted k-nearest neighbours (DINOv2)
    k_grid: Sequence[int] = DEFAULT_K_GRID  # knn: the k values chosen from (one value: that k, no selection)
    operating_points: Sequence[str] = DEFAULT_OPERATING_POINTS  # threshold rules (trainer.operating_points)
    subgroups: Sequence[str] = ()  # metadata columns scored per group on the test rows (trainer.subgroups)
    calibrate: str = "none"  # temperature: one temperature fitted on the out-of-fold predictions, metrics after it

    @property
    def pool_splits(self) -> tuple[str, ...]:
        """The splits probes are fitted and selected on: train, and val unless val is held out as the test set.

        Rows of the ``test`` split are never trained on, whichever split is scored.
        """
        return tuple(x for x in ("train", "val") if x != self.test_split)

    def settings(self) -> list[Setting]:
        out = []
        for f in self.fractions:
            for s in self.seeds if f < 1 else self.seeds[:1]:
                out.append(Setting(float(f), int(s)))
        return out


@dataclass
class ProbeOutcome:
    """A tested classifier (a fitted probe, a kNN with its k, or a zero-shot head) and where its rows went."""

    probe_id: str
    layer: int
    setting: Setting
    C: float | None  # None: knn and zeroshot
    selection: str
    cv_scores: dict
    cv_mean: float | None  # mean selection score of the chosen C or k (training rows only)
    metrics: dict
    probe: FittedProbe | None  # None: knn and zeroshot (nothing to store)
    test_hashes: list[str]
    y_test: np.ndarray
    proba: np.ndarray
    n_train: int
    weights_uri: str | None = None
    select_by: str = "macro_auc"  # the metric that chose C
    cv_log_loss: float | None = None  # mean held-out log loss of the chosen C
    tied: int = 1  # C values tied on the selection metric (the tie broken by log loss)
    cv_not_converged: dict[str, int] = field(default_factory=dict)  # {C: fold probes stopped at the iteration cap}
    kind: ProbeKind = "multiclass"
    method: str = "probe"  # probe | knn | zeroshot
    k: int | None = None  # knn: the neighbours used
    solver: str | None = None  # the solver column when it is not the spec's (knn; zeroshot: softmax | sigmoid)
    extra: dict = field(default_factory=dict)  # method-specific entries of the metrics JSON
    oof_y: np.ndarray | None = None  # out-of-fold training labels and predictions at the chosen C (thresholds)
    oof_proba: np.ndarray | None = None
    pool_metadata: list[dict] | None = None  # the training rows' metadata (subgroup bins of external test sets)

    @property
    def converged(self) -> bool:
        """The refit reached its tolerance (always true for methods without an iterative fit)."""
        return self.probe is None or self.probe.converged

    @property
    def n_iter(self) -> int:
        return 0 if self.probe is None else self.probe.n_iter

    @property
    def hyperparameter(self) -> str:
        """What was chosen, for tables: ``C=0.1``, ``k=20`` or ``-``."""
        if self.C is not None:
            return f"C={self.C:g}"
        return f"k={self.k}" if self.k is not None else "-"


def _check_group_overlap(data: TaskData, spec: ExperimentSpec) -> None:
    """Refuse (unless allowed) a patient group with rows both in the training pool and in the test split."""
    if data.groups is None:
        return
    train = set(data.groups[data.rows(spec.pool_splits)].tolist())
    test = set(data.groups[data.rows(spec.test_split)].tolist())
    shared = sorted(str(g) for g in train & test if g is not None)
    if shared and not spec.allow_group_overlap:
        raise InvalidInputError(
            f"dataset {spec.task.dataset!r}: {len(shared)} patient group(s) have rows both in "
            f"{'/'.join(spec.pool_splits)} and in the {spec.test_split} split (e.g. {', '.join(shared[:3])}), so test "
            "scores would be optimistic; re-ingest with a grouped split, or pass --allow-group-overlap"
        )


def prepare(store: FeatureStore, spec: ExperimentSpec, only_hashes: set[str] | None = None) -> TaskData:
    """Labels and splits of the experiment's images (optionally restricted to ``only_hashes``)."""
    data = load_task_data(store, spec.task, spec.feature_set_id, spec.layers, allow_missing=spec.allow_missing)
    if only_hashes is not None:
        keep = np.array([h in only_hashes for h in data.image_hashes])
        data.image_hashes = [h for h, k in zip(data.image_hashes, keep, strict=True) if k]
        data.split, data.y = data.split[keep], data.y[keep]
        data.groups = None if data.groups is None else data.groups[keep]
        data.metadata = [m for m, k in zip(data.metadata, keep, strict=True) if k]
    unknown = sorted(set(data.split.tolist()) - set(SPLITS))
    if unknown:
        raise InvalidInputError(f"dataset {spec.task.dataset!r} has rows in unknown splits {unknown}")
    if spec.test_split not in {s.value for s in TestSplit}:
        raise InvalidInputError(f"--test-split must be test or val, got {spec.test_split!r}")
    if spec.test_split == "val" and spec.selection == "val":
        raise InvalidInputError("--selection val cannot pick C on the split held out as the test set; use cv")
    if not len(data.rows(spec.test_split)):
        present = sorted(set(data.split.tolist()))
        hint = " (pass --test-split val to hold out the val split)" if "val" in present else ""
        raise InvalidInputError(
            f"dataset {spec.task.dataset!r} has no {spec.test_split!r} rows to test on; its splits: "
            f"{', '.join(present)}{hint}, or re-ingest it with a test split"
        )
    _check_group_overlap(data, spec)
    pool = data.rows(spec.pool_splits)
    if spec.subgroups:
        test = data.rows(spec.test_split)
        check_subgroups(parse_subgroups(spec.subgroups), [data.metadata[i] for i in pool],
                        [data.metadata[i] for i in test])  # fmt: skip
    if not len(pool):
        raise InvalidInputError(
            f"dataset {spec.task.dataset!r} has no {'/'.join(spec.pool_splits)} rows to fit probes on"
        )
    if data.kind != "multilabel" and spec.method != "zeroshot":
        present = sorted({int(v) for v in data.y[pool]})
        if len(present) < 2:
            only = data.class_names[present[0]]
            raise InvalidInputError(
                f"task {spec.task.task!r} of dataset {spec.task.dataset!r}: every {'/'.join(spec.pool_splits)} row "
                f"is class {only!r}, so no classifier can be fitted; ingest rows of the other classes"
            )
    return data


def temperature_scaled(y_oof: np.ndarray, proba_oof: np.ndarray, y_test: np.ndarray, proba: np.ndarray,
                       kind: ProbeKind, class_names: list[str], *, n_boot: int, seed: int) -> dict:  # fmt: skip
    """One temperature fitted on the out-of-fold predictions, and the test metrics after it (same replicates)."""
    temperature = fit_temperature(y_oof, proba_oof, kind)
    after = metrics_with_ci(y_test, with_temperature(proba, kind, temperature), kind, class_names, n_boot=n_boot,
                            seed=seed)  # fmt: skip
    keys = ("brier", "ece", "ece_bins", "macro_auc", "balanced_accuracy", "accuracy", "macro_f1")
    return {"method": "temperature", "temperature": temperature, "fitted_on": f"{len(y_oof)} out-of-fold training "
            "predictions", **{k: after[k] for k in keys}}  # fmt: skip


def run_experiment(
    store: FeatureStore,
    spec: ExperimentSpec,
    run_id: str,
    *,
    only_hashes: set[str] | None = None,
    show_progress: bool = True,
) -> list[ProbeOutcome]:
    """Fit, select, refit and test every layer x setting; write probe_results, predictions and weights."""
    data = prepare(store, spec, only_hashes)
    pool, test = data.rows(spec.pool_splits), data.rows(spec.test_split)
    hashes = data.image_hashes
    feats = read_features(store, spec.feature_set_id, spec.layers, hashes)
    if spec.method == "knn":
        knn = _run_knn(spec, data, feats, pool, test, show_progress)
        _note_missing(knn, data)
        write_outcomes(store, spec, run_id, knn, 0.0, ProtocolTiming())
        return knn
    if spec.method != "probe":
        raise InvalidInputError(f"--method {spec.method!r}: choose probe or knn (zero-shot: medprobe zeroshot)")
    options = dict(spec.solver_options)
    if spec.solver == "torch" and spec.device:
        options["device"] = spec.device
    solver = get_solver(spec.solver, **options)
    settings = spec.settings()
    metric = spec.select_by or spec.task.primary_metric
    timing = ProtocolTiming()
    n_cols = len(settings) * ((spec.n_splits if spec.selection == "cv" else 1) * len(spec.c_grid) + 1)
    outcomes: list[ProbeOutcome] = []
    with progress_bar("probes", disable=not show_progress) as bar:
        task_bar = bar.add_task(f"fit {spec.task.task}", total=len(spec.layers) * n_cols)
        layers = list(spec.layers)  # one batched solve: the solvers accept layers of different widths
        results = fit_protocol(
            [feats[x][pool] for x in layers],
            data.y[pool],
            data.kind,
            data.class_names,
            solver,
            groups=None if data.groups is None else data.groups[pool],
            is_val=data.split[pool] == "val",
            selection=spec.selection,
            c_grid=spec.c_grid,
            n_splits=spec.n_splits,
            metric=metric,
            settings=settings,
            class_weight=spec.class_weight,
            timing=timing,
            grid=spec.grid,
            on_iteration=lambda done, stalled: bar.advance(task_bar, done + stalled),
        )
        bar.update(task_bar, completed=len(spec.layers) * n_cols)  # the adaptive grid skips the C values past the turn
        outcomes = [_tested(r, layers[r.layer_pos], spec, data, feats, pool, test) for r in results]
    per_probe = (timing.select_seconds + timing.refit_seconds) / max(1, len(outcomes))
    _note_missing(outcomes, data)
    write_outcomes(store, spec, run_id, outcomes, per_probe, timing)
    return outcomes


def _note_missing(outcomes: list[ProbeOutcome], data: TaskData) -> None:
    """Record with every result how many of the dataset's images ``--allow-missing`` left out, and why."""
    for o in outcomes:
        o.extra.update({"n_missing_labels": data.n_missing_labels, "n_missing_features": data.n_missing_features})


def _add_clinical(metrics: dict, spec: ExperimentSpec, data: TaskData, pool: np.ndarray, test: np.ndarray,
                  proba: np.ndarray, oof_rows: np.ndarray | None, oof_proba: np.ndarray | None) -> np.ndarray | None:
    """Operating points (thresholds from the out-of-fold training predictions), temperature calibration and
    subgroups of one classifier's test predictions, under the replicates of ``metrics_with_ci``; returns the
    out-of-fold labels (None without out-of-fold rows)."""
    oof_y = None if oof_rows is None else data.y[pool][oof_rows]
    W = multiplicities(len(test), spec.n_boot, spec.seed)
    rules = parse_rules(spec.operating_points)
    oof = (oof_y, oof_proba, rules) if oof_y is not None and oof_proba is not None and rules else None
    if oof is not None:
        metrics["operating_points"] = operating_points(oof[0], oof[1], data.y[test], proba, data.kind,
                                                       data.class_names, rules, W)  # fmt: skip
    if spec.calibrate == "temperature" and oof is not None:
        metrics["calibrated"] = temperature_scaled(oof[0], oof[1], data.y[test], proba, data.kind, data.class_names,
                                                   n_boot=spec.n_boot, seed=spec.seed)  # fmt: skip
    if spec.subgroups:
        pool_meta, test_meta = [data.metadata[i] for i in pool], [data.metadata[i] for i in test]
        metrics["subgroups"] = [
            subgroup_metrics(
                sg, *assign_groups(sg, pool_meta, test_meta), data.y[test], proba, data.kind, data.class_names, W, oof
            )
            for sg in parse_subgroups(spec.subgroups)
        ]
    return oof_y


def _tested(r: ProtocolResult, layer: int, spec: ExperimentSpec, data: TaskData, feats: dict[int, np.ndarray],
            pool: np.ndarray, test: np.ndarray) -> ProbeOutcome:  # fmt: skip
    """A selected and refitted probe scored once on the test rows, with bootstrap CIs; operating points chosen on
    its out-of-fold training predictions and scored on the test rows with the same replicates."""
    proba = r.probe.predict_proba(feats[layer][test])  # the one pass over the test rows
    metrics = metrics_with_ci(data.y[test], proba, data.kind, data.class_names, n_boot=spec.n_boot, seed=spec.seed)
    oof_y = _add_clinical(metrics, spec, data, pool, test, proba, r.oof_rows, r.oof_proba)
    scores = [v for v in r.cv_scores[repr(r.C)] if v is not None]
    return ProbeOutcome(
        new_id("probe"), layer, r.setting, r.C, r.selection, r.cv_scores, float(np.mean(scores)) if scores else None,
        metrics, r.probe, [data.image_hashes[i] for i in test], data.y[test], proba, r.n_train,
        select_by=r.select_by, cv_log_loss=float(np.mean(r.cv_log_loss[repr(r.C)])) if r.cv_log_loss else None,
        tied=r.tied, cv_not_converged=r.cv_not_converged, kind=r.probe.kind, oof_y=oof_y, oof_proba=r.oof_proba,
        pool_metadata=[data.metadata[i] for i in pool] if spec.subgroups else None,
    )  # fmt: skip


def _run_knn(
    spec: ExperimentSpec, data: TaskData, feats: dict[int, np.ndarray], pool: np.ndarray, test: np.ndarray,
    show_progress: bool,
) -> list[ProbeOutcome]:  # fmt: skip
    """k by the probes' selection on training rows, then every layer x setting scored once on the test rows."""
    settings = spec.settings()
    metric = spec.select_by or spec.task.primary_metric
    layers = list(spec.layers)
    with progress_bar("kNN", disable=not show_progress) as bar:
        task_bar = bar.add_task(f"kNN {spec.task.task}", total=len(layers) * len(settings))
        results = fit_knn_protocol(
            [feats[x][pool] for x in layers],
            data.y[pool],
            [feats[x][test] for x in layers],
            data.y[test],
            data.kind,
            data.class_names,
            groups=None if data.groups is None else data.groups[pool],
            is_val=data.split[pool] == "val",
            selection=spec.selection,
            k_grid=spec.k_grid,
            n_splits=spec.n_splits,
            metric=metric,
            settings=settings,
            device=spec.device,
            on_step=lambda: bar.advance(task_bar, 1),
        )
    outcomes = []
    hashes = data.image_hashes
    for r in results:
        metrics = metrics_with_ci(data.y[test], r.proba, data.kind, data.class_names, n_boot=spec.n_boot,
                                  seed=spec.seed)  # fmt: skip
        metrics["label_precision_at_k"] = precision_entry(r.precision_at_k, r.k, spec.n_boot, spec.seed)
        oof_y = _add_clinical(metrics, spec, data, pool, test, r.proba, r.oof_rows, r.oof_proba)
        scores = [v for v in r.cv_scores.get(str(r.k), []) if v is not None]
        outcomes.append(
            ProbeOutcome(
                new_id("knn"), layers[r.layer_pos], r.setting, None, r.selection, r.cv_scores,
                float(np.mean(scores)) if scores else None, metrics, None, [hashes[i] for i in test], data.y[test],
                r.proba, r.n_train, select_by=metric, kind=data.kind, method="knn", k=r.k, solver="knn",
                extra={"k_grid": sorted({int(k) for k in spec.k_grid}), "temperature": 0.07, "similarity": "cosine"},
                oof_y=oof_y, oof_proba=r.oof_proba,
                pool_metadata=[data.metadata[i] for i in pool] if spec.subgroups else None,
            )
        )  # fmt: skip
    return outcomes


def precision_entry(per_query: np.ndarray, k: int, n_boot: int, seed: int) -> dict:
    """Mean label precision@k over the test queries, with a percentile bootstrap CI over queries."""
    from medprobe.trainer.bootstrap import multiplicities

    v = np.asarray(per_query, dtype=np.float64)
    if not len(v):
        return {"value": None, "ci_low": None, "ci_high": None, "k": k}
    W = multiplicities(len(v), n_boot, seed)
    reps = (W @ v) / len(v)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {"value": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi), "k": k}


def write_outcomes(
    store: FeatureStore,
    spec: ExperimentSpec,
    run_id: str,
    outcomes: list[ProbeOutcome],
    per_probe: float,
    timing: ProtocolTiming,
) -> None:
    """Append probe_results and predictions rows and store each probe's weights as safetensors."""
    with store.transaction():  # results and their predictions become visible together, or not at all
        _write_outcomes(store, spec, run_id, outcomes, per_probe, timing)


def _write_outcomes(
    store: FeatureStore, spec: ExperimentSpec, run_id: str, outcomes: list[ProbeOutcome], per_probe: float,
    timing: ProtocolTiming,
) -> None:  # fmt: skip
    versions = json.dumps(package_versions(), sort_keys=True)
    results, preds = [], []
    for o in outcomes:
        meta = {
            "run_id": run_id,
            "probe_id": o.probe_id,
            "feature_set_id": spec.feature_set_id,
            "layer": str(o.layer),
            "task": spec.task.task,
            "C": repr(o.C),
            "class_names": json.dumps(spec.task.class_names),
        }
        if o.probe is not None:
            meta["kind"] = o.probe.kind
            o.weights_uri = store.put_bytes(f"probes/{run_id}/{o.probe_id}.safetensors", weights_bytes(o.probe, meta))
        metrics = {**o.metrics, **o.extra}
        metrics["cv_mean"] = o.cv_mean
        metrics["selected_by"] = o.select_by
        metrics["cv_log_loss"] = o.cv_log_loss
        metrics["c_tied"] = o.tied
        # fold probes that stopped at the iteration cap, by C: their validation scores are approximate
        metrics["cv_not_converged"] = o.cv_not_converged
        metrics["n_boot"] = spec.n_boot
        metrics["grid"] = spec.grid  # adaptive: cv_scores hold only the C values fitted
        metrics["timing"] = {
            "select_seconds": timing.select_seconds,
            "refit_seconds": timing.refit_seconds,
            "n_probes_fitted": timing.n_probes,
            "n_iter": o.n_iter,
            "converged": o.converged,
        }
        results.append(
            ProbeResultRow(
                run_id=run_id,
                probe_id=o.probe_id,
                feature_set_id=spec.feature_set_id,
                layer=o.layer,
                dataset=spec.task.dataset,
                task=spec.task.task,
                solver=o.solver or spec.solver,
                c=o.C,
                c_grid=[float(c) for c in spec.c_grid] if o.method == "probe" else [],
                selection=o.selection if spec.test_split == "test" else f"{o.selection};test={spec.test_split}",
                cv_scores=json.dumps(o.cv_scores),
                train_fraction=o.setting.fraction,
                seed=o.setting.seed,
                n_train=o.n_train,
                n_test=len(o.y_test),
                class_names=list(spec.task.class_names),
                metrics=json.dumps(metrics),
                fit_seconds=per_probe,
                weights_uri=o.weights_uri,
                versions=versions,
                method=o.method,
                k=o.k,
            )
        )
        for h, yt, p in zip(o.test_hashes, o.y_test, o.proba, strict=True):
            y_json = json.dumps(yt.tolist() if np.ndim(yt) else int(yt))
            preds.append(
                PredictionRow(
                    run_id=run_id, probe_id=o.probe_id, image_hash=h, y_true=y_json, probabilities=[float(v) for v in p]
                )
            )
    store.append("probe_results", results)
    store.append("predictions", preds)
