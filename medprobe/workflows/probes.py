"""Probe workflows: ``train`` (one layer), ``sweep`` (every layer) and ``compare`` (feature sets, paired).

Each function takes the command's long options as keyword arguments (``--test-split`` -> ``test_split``), records
its run in ``runs`` and returns a typed result with the numbers the CLI prints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medprobe.errors import InvalidInputError
from medprobe.layerspec import resolve_layer, resolve_layers
from medprobe.schemas.vocab import (
    Calibration,
    CGrid,
    ClassWeight,
    ComparisonTest,
    Method,
    SelectBy,
    Selection,
    SolverName,
    TestSplit,
)
from medprobe.trainer.defaults import DEFAULT_C_GRID, N_BOOT
from medprobe.workflows.common import (
    ListArg,
    StoreArg,
    choice,
    float_list,
    int_list,
    open_store,
    optional_choice,
    split_list,
)
from medprobe.workflows.results import METRIC_KEYS, Result, jsonable, metric_columns

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore
    from medprobe.schemas.tables import ProbeComparisonRow
    from medprobe.trainer.experiment import ExperimentSpec, ProbeOutcome
    from medprobe.trainer.stored import StoredProbe

TEST_METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "auc_per_class", "label_precision_at_k",
                    "brier", "ece", "ece_bins", "operating_points", "subgroups", "calibrated", "undefined")  # fmt: skip


def metrics_doc(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test metrics a result reports (value and CI per metric; ``undefined`` says why one has no value)."""
    return {k: metrics[k] for k in TEST_METRIC_KEYS if k in metrics}


@dataclass
class ProtocolArgs:
    """How probes are fitted, selected and scored: the options train, sweep and compare share, checked once."""

    dataset: str | None = None
    method: str | Method = Method.probe
    k: ListArg = None
    solver: str | SolverName = SolverName.torch
    c_grid: ListArg = None
    selection: str | Selection = Selection.cv
    grid: str | CGrid = CGrid.adaptive
    select_by: str | SelectBy | None = None
    cv: int = 5
    test_split: str | TestSplit = TestSplit.test
    class_weight: str | ClassWeight = ClassWeight.none
    allow_missing: bool = False
    allow_group_overlap: bool = False
    n_boot: int = N_BOOT
    boot_seed: int = 0
    device: str | None = None
    operating_points: ListArg = None
    test_dataset: ListArg = None
    allow_overlap: bool = False
    subgroup: ListArg = None
    calibrate: str | Calibration = Calibration.none

    def rules(self) -> list[str]:
        """The operating-point rules, checked (default: youden, sens=0.9, spec=0.9)."""
        from medprobe.trainer.operating_points import DEFAULT_OPERATING_POINTS, parse_rules

        values = split_list(self.operating_points) or list(DEFAULT_OPERATING_POINTS)
        return [r.label for r in parse_rules(values)]

    def k_grid(self) -> list[int]:
        """The k values of method knn (positive integers), or the default grid."""
        from medprobe.trainer.knn import DEFAULT_K_GRID

        if self.k is None:
            return list(DEFAULT_K_GRID)
        if choice(Method, self.method, "--method") is not Method.knn:
            raise InvalidInputError("--k is for --method knn; drop it or add --method knn")
        values = int_list(self.k, "--k")
        if not values or any(v < 1 for v in values):
            given = ",".join(split_list(self.k))
            raise InvalidInputError(f"--k takes positive integers, e.g. --k 10,20,50; got {given!r}")
        return sorted(set(values))

    def c_values(self) -> list[float]:
        """The C grid: given values (positive, finite, at least one) or the default log grid."""
        if self.c_grid is None:
            return list(DEFAULT_C_GRID)
        values = float_list(self.c_grid, "--c-grid")
        if not values:
            raise InvalidInputError(f"--c-grid {self.c_grid!r} names no C value; e.g. --c-grid 0.01,0.1,1")
        bad = [v for v in values if not (math.isfinite(v) and v > 0)]
        if bad:
            raise InvalidInputError(f"--c-grid: every C must be a positive finite number; got {bad}")
        return sorted(set(values))

    def spec(self, store: FeatureStore, task: str, feature_set_id: str, layers: list[int],
             fractions: Sequence[float] = (1.0,), seeds: Sequence[int] = (0, 1, 2)) -> ExperimentSpec:  # fmt: skip
        """The trainer's spec of one feature set's layers under this protocol."""
        from medprobe.trainer.data import resolve_task
        from medprobe.trainer.experiment import ExperimentSpec
        from medprobe.trainer.subgroups import parse_subgroups

        if self.cv < 2:
            raise InvalidInputError(f"--cv {self.cv}: cross-validation needs at least 2 folds")
        if self.n_boot < 1:
            raise InvalidInputError(f"--n-boot {self.n_boot}: at least 1 bootstrap replicate")
        select_by = optional_choice(SelectBy, self.select_by, "--select-by")
        class_weight = choice(ClassWeight, self.class_weight, "--class-weight")
        return ExperimentSpec(
            feature_set_id=feature_set_id, task=resolve_task(store, task, self.dataset), layers=layers,
            solver=choice(SolverName, self.solver, "--solver").value, c_grid=self.c_values(),
            selection=choice(Selection, self.selection, "--selection").value,
            grid=choice(CGrid, self.grid, "--grid").value, select_by=None if select_by is None else select_by.value,
            n_splits=self.cv, test_split=choice(TestSplit, self.test_split, "--test-split").value,
            fractions=list(fractions), seeds=list(seeds),
            class_weight=None if class_weight is ClassWeight.none else class_weight.value,
            allow_missing=self.allow_missing, allow_group_overlap=self.allow_group_overlap, n_boot=self.n_boot,
            seed=self.boot_seed, device=self.device, method=choice(Method, self.method, "--method").value,
            k_grid=self.k_grid(), operating_points=self.rules(),
            subgroups=[s.label for s in parse_subgroups(split_list(self.subgroup))],
            calibrate=choice(Calibration, self.calibrate, "--calibrate").value,
        )  # fmt: skip


def run_params(spec: ExperimentSpec) -> dict[str, Any]:
    """The parameters recorded in ``runs``, named as the options (``--grid`` -> ``grid``, ``--cv`` -> ``cv``)."""
    return {
        "feature_set_id": spec.feature_set_id,
        "method": spec.method,
        **({"k": list(spec.k_grid)} if spec.method == "knn" else {}),
        "dataset": spec.task.dataset,
        "task": spec.task.task,
        "layers": spec.layers,
        "solver": spec.solver,
        "c_grid": list(spec.c_grid),
        "selection": spec.selection,
        "grid": spec.grid,
        "select_by": spec.select_by or spec.task.primary_metric,
        "cv": spec.n_splits,
        "test_split": spec.test_split,
        "train_fraction": list(spec.fractions),
        "seeds": list(spec.seeds),
        "class_weight": spec.class_weight,
        "n_boot": spec.n_boot,
        "boot_seed": spec.seed,
        "operating_points": list(spec.operating_points),
        "subgroup": list(spec.subgroups),
        "calibrate": spec.calibrate,
    }


def fractions_of(train_fraction: ListArg) -> list[float]:
    """The label-efficiency fractions (each in (0, 1]), or [1.0]."""
    if train_fraction is None:
        return [1.0]
    values = float_list(train_fraction, "--train-fraction")
    if not values:
        raise InvalidInputError("--train-fraction names no fraction; e.g. --train-fraction 0.1,0.5,1")
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise InvalidInputError(f"--train-fraction values must lie in (0, 1]; got {bad}")
    return sorted(set(values))


def seeds_of(seeds: ListArg) -> list[int]:
    """The subsample seeds, or [0, 1, 2]."""
    if seeds is None:
        return [0, 1, 2]
    values = int_list(seeds, "--seeds")
    if not values:
        raise InvalidInputError("--seeds names no seed; e.g. --seeds 0,1,2")
    return list(dict.fromkeys(values))


def stored_layers(store: FeatureStore, feature_set_id: str) -> list[int]:
    """The layers a feature set has rows for; InvalidInputError when it has none."""
    stored = store.layers(feature_set_id)
    if not stored:
        raise InvalidInputError(f"feature set {feature_set_id} has no extracted rows: run `medprobe extract`")
    return stored


def probe_summary(o: ProbeOutcome) -> dict[str, Any]:
    """One probe as a flat row with its test metrics and CIs."""
    return {
        "probe_id": o.probe_id, "layer": o.layer, "train_fraction": o.setting.fraction, "seed": o.setting.seed,
        "C": o.C, "selection": o.selection, "cv_mean": o.cv_mean, "selected_by": o.select_by, "c_tied": o.tied,
        "n_train": o.n_train, "n_test": len(o.y_test), "method": o.method, "k": o.k, "converged": o.converged,
        "n_iter": o.n_iter, "cv_not_converged": sum(o.cv_not_converged.values()),
        **metric_columns(o.metrics, METRIC_KEYS),
    }  # fmt: skip


def _probe_doc(o: ProbeOutcome) -> dict[str, Any]:
    keys = ("probe_id", "method", "layer", "train_fraction", "seed", "C", "k", "selection", "selected_by", "c_tied",
            "cv_mean", "n_train", "n_test")  # fmt: skip
    row = probe_summary(o)
    return {**{k: row[k] for k in keys}, "converged": o.converged, "n_iter": o.n_iter,
            "cv_not_converged": o.cv_not_converged, "test": metrics_doc(o.metrics)}  # fmt: skip


@dataclass
class ProbeRunResult(Result):
    """A train or sweep run: the probe of the best layer (by the selection score on training rows) and every
    probe fitted (``probes``; one per layer x training fraction x seed)."""

    run_id: str
    kind: str
    feature_set_id: str
    dataset: str
    task: str
    class_names: list[str]
    layer: int
    probe_id: str
    method: str
    C: float | None
    k: int | None
    test: dict[str, Any]
    probes: list[dict[str, Any]]
    n_missing_labels: int = 0  # extracted images of the dataset left out for having no label (--allow-missing)
    n_missing_features: int = 0  # images of the dataset left out for having no features (--allow-missing)
    # the best probe scored on each --test-dataset: {dataset, probe_id, applied_from, n_predicted, metrics, ...}
    external: list[dict[str, Any]] = field(default_factory=list)
    selection: str = field(default="cv", repr=False)
    outcomes: list[ProbeOutcome] = field(default_factory=list, repr=False, compare=False)

    @property
    def macro_auc(self) -> float | None:
        """Test macro AUC of the best layer's probe."""
        return (self.test.get("macro_auc") or {}).get("value")

    def rows(self) -> list[dict[str, Any]]:
        """One row per probe: its choice, training score and test metrics with CIs."""
        return [{"run_id": self.run_id, "feature_set_id": self.feature_set_id, **probe_summary(o)}
                for o in self.outcomes]  # fmt: skip


def _run_probes(kind: str, store: StoreArg, task: str, layers: str | None, feature_set: str | None,
                model: str | None, prompt: str | None, pooling: str | None, protocol: ProtocolArgs,
                train_fraction: ListArg, seeds: ListArg, no_progress: bool) -> ProbeRunResult:  # fmt: skip
    from medprobe.featurestore import start_run
    from medprobe.trainer.compare import best_layer
    from medprobe.trainer.data import resolve_feature_set
    from medprobe.trainer.experiment import run_experiment
    from medprobe.trainer.external import check_external, score_external

    st = open_store(store)
    fs = resolve_feature_set(st, feature_set, model, prompt, pooling)
    stored = stored_layers(st, fs.feature_set_id)
    what = f"feature set {fs.feature_set_id}"
    if kind == "train":
        chosen = [resolve_layer("-1" if layers is None else str(layers), stored, what=what)]
    else:
        chosen = resolve_layers("all" if layers is None else str(layers), stored, what=what)
    spec = protocol.spec(st, task, fs.feature_set_id, chosen, fractions_of(train_fraction), seeds_of(seeds))
    externals = split_list(protocol.test_dataset)
    overlaps = check_external(st, spec, externals, protocol.allow_overlap) if externals else {}
    params = {**run_params(spec), "test_dataset": externals, "allow_overlap": protocol.allow_overlap}
    with start_run(st, kind, params) as run:
        with st.transaction():  # the run's results, in-dataset and external, appear together or not at all
            outcomes = run_experiment(st, spec, run.run_id, show_progress=not no_progress)
            best = best_layer(outcomes)
            scored = [score_external(st, spec, best, d, run.run_id, overlaps[d]) for d in externals]
        run.summary.update({"n_probes": len(outcomes), "best_layer": best.layer, "best_probe": best.probe_id,
                            "test_macro_auc": best.metrics["macro_auc"]["value"],
                            "external": {e.dataset: e.probe_id for e in scored}})  # fmt: skip
    return ProbeRunResult(
        run_id=run.run_id, kind=kind, feature_set_id=spec.feature_set_id, dataset=spec.task.dataset,
        task=spec.task.task, class_names=list(spec.task.class_names), layer=best.layer, probe_id=best.probe_id,
        method=best.method, C=best.C, k=best.k, test=metrics_doc(best.metrics),
        probes=[_probe_doc(o) for o in outcomes], selection=spec.selection, outcomes=outcomes,
        n_missing_labels=int(best.extra.get("n_missing_labels", 0)),
        n_missing_features=int(best.extra.get("n_missing_features", 0)),
        external=[jsonable(e.doc()) for e in scored],
    )  # fmt: skip


PROBE_PARAMETERS = """
    Args:
        task: the task name (see ``medprobe datasets``).
        layers: train: the stored layer to probe (default -1, the last stored; negative counts from the last);
            sweep: the layers (default every stored layer, ``"all"``; also ``"0,4,-1"``, ``"2-10"``, ``"2:10:2"``).
        feature_set: the feature set id; or name it by ``model`` (and ``prompt``, ``pooling``).
        dataset: the dataset of the task, when several datasets have it.
        method: ``probe`` (L2 logistic regression) or ``knn`` (cosine kNN, k chosen from ``k``).
        k: knn: the neighbours to choose from (default 10,20,50,100,200).
        solver: ``torch`` (batched L-BFGS), ``sklearn`` (reference) or ``cuml``.
        c_grid: the C values (default 1e-4 ... 1000, a log grid).
        selection: ``cv`` (grouped stratified K-fold on training rows) or ``val`` (the val split).
        grid: ``adaptive`` (climb C warm-started, stop once the score turns) or ``full`` (every C).
        select_by: the metric that chooses C (default: the task's primary metric).
        cv: folds of ``selection="cv"``.
        test_split: the split scored once as the test set (``test`` or ``val``).
        class_weight: ``none`` or ``balanced``.
        allow_missing: train on the images that have labels and features.
        allow_group_overlap: train even when a patient group is in both the training and the test rows.
        n_boot: bootstrap replicates of every CI; boot_seed: their seed.
        device: the torch device of the solver.
        operating_points: threshold rules chosen on out-of-fold training predictions and scored on the test rows:
            ``youden``, ``sens=S``, ``spec=S`` (default youden, sens=0.9, spec=0.9); per class one-vs-rest.
        test_dataset: external test sets: datasets with the same task and class names, each scored once (every
            image) by the probe fitted on the training dataset (its C and layer chosen there), with its own CIs.
        allow_overlap: score an external dataset that shares images (by sha256) with the training rows.
        subgroup: metadata columns whose groups are scored on the test rows (``sex``; ``age:4``: quartiles of the
            training rows' ages), with CIs and the largest gap between groups; groups under 20 test rows flagged.
        calibrate: ``none``, or ``temperature``: one temperature fitted on the out-of-fold training predictions;
            the test metrics after it are reported beside the raw ones (``calibrated``).
        train_fraction: label efficiency: fractions of the training rows (e.g. [0.01, 0.1, 1]).
        seeds: subsample seeds of fractions below 1 (default 0,1,2).
        no_progress: no progress bar.
        store: a store URL or an open ``FeatureStore`` (default ``$MEDPROBE_STORE`` or ``./medprobe-store``).
"""


def _probe_workflow(kind: str, summary: str) -> Callable[..., ProbeRunResult]:
    """``train`` or ``sweep``: one signature (the commands' options); they differ in their default layers."""

    def workflow(
        *, task: str, layers: str | int | None = None, feature_set: str | None = None, model: str | None = None,
        prompt: str | None = None, pooling: str | None = None, dataset: str | None = None,
        method: str | Method = Method.probe, k: ListArg = None, solver: str | SolverName = SolverName.torch,
        c_grid: ListArg = None, selection: str | Selection = Selection.cv, grid: str | CGrid = CGrid.adaptive,
        select_by: str | SelectBy | None = None, cv: int = 5, test_split: str | TestSplit = TestSplit.test,
        class_weight: str | ClassWeight = ClassWeight.none, allow_missing: bool = False,
        allow_group_overlap: bool = False, n_boot: int = N_BOOT, boot_seed: int = 0, device: str | None = None,
        operating_points: ListArg = None, test_dataset: ListArg = None, allow_overlap: bool = False,
        subgroup: ListArg = None, calibrate: str | Calibration = Calibration.none, train_fraction: ListArg = None,
        seeds: ListArg = None, no_progress: bool = False,
        store: StoreArg = None,
    ) -> ProbeRunResult:  # fmt: skip
        protocol = ProtocolArgs(dataset, method, k, solver, c_grid, selection, grid, select_by, cv, test_split,
                                class_weight, allow_missing, allow_group_overlap, n_boot, boot_seed, device,
                                operating_points, test_dataset, allow_overlap, subgroup, calibrate)  # fmt: skip
        return _run_probes(kind, store, task, None if layers is None else str(layers), feature_set, model, prompt,
                           pooling, protocol, train_fraction, seeds, no_progress)  # fmt: skip

    workflow.__name__ = workflow.__qualname__ = kind
    workflow.__doc__ = summary + "\n" + PROBE_PARAMETERS
    return workflow


train = _probe_workflow(
    "train", "Fit one probe (one feature set, one layer, one task): C by CV, refit, test once with bootstrap CIs."
)
sweep = _probe_workflow(
    "sweep",
    "Probe every layer of a feature set (the per-layer metric curve); all layers x folds x C in one solve. The "
    "result's ``layer`` is the layer chosen by the selection score on training rows.",
)


@dataclass
class CompareResult(Result):
    """Feature sets compared on the same test images: each against the first (the reference), per metric."""

    run_id: str
    kind: str
    task: str
    reference: str
    test: dict[str, Any]
    feature_sets: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    dataset: str = field(default="", repr=False)
    comparison_rows: list[ProbeComparisonRow] = field(default_factory=list, repr=False, compare=False)

    def rows(self) -> list[dict[str, Any]]:
        """The ``probe_comparisons`` rows of this run."""
        return [r.model_dump() for r in self.comparison_rows]


def _compare_specs(st: FeatureStore, task: str, feature_sets: list[str], layers: list[str],
                   protocol: ProtocolArgs) -> tuple[list[ExperimentSpec], set[str]]:  # fmt: skip
    from medprobe.trainer.experiment import prepare

    if len(feature_sets) < 2:
        raise InvalidInputError("compare needs at least two feature sets (--feature-set A,B)")
    if layers and len(layers) != len(feature_sets):
        raise InvalidInputError("give one --layers value per --feature-set (e.g. -l 8,-1), or none (best layer by CV)")
    specs = []
    for i, fs in enumerate(feature_sets):
        st.feature_set(fs)
        stored = stored_layers(st, fs)
        chosen = [resolve_layer(layers[i], stored, what=f"feature set {fs}")] if layers else stored
        specs.append(protocol.spec(st, task, fs, chosen))
    hashes = [set(prepare(st, s).image_hashes) for s in specs]
    common = set.intersection(*hashes)
    for s, mine in zip(specs, hashes, strict=True):
        if len(mine) != len(common) and not protocol.allow_missing:
            raise InvalidInputError(
                f"feature set {s.feature_set_id} covers {len(mine)} labelled images but only {len(common)} are "
                "common to all compared sets: pass --allow-missing to compare on the common images"
            )
    return specs, common


def compare(
    *, task: str, feature_set: ListArg, layers: ListArg = None, dataset: str | None = None,
    method: str | Method = Method.probe, k: ListArg = None, solver: str | SolverName = SolverName.torch,
    c_grid: ListArg = None, selection: str | Selection = Selection.cv, grid: str | CGrid = CGrid.adaptive,
    select_by: str | SelectBy | None = None, cv: int = 5, test_split: str | TestSplit = TestSplit.test,
    class_weight: str | ClassWeight = ClassWeight.none, allow_missing: bool = False,
    allow_group_overlap: bool = False, n_boot: int = N_BOOT, boot_seed: int = 0, device: str | None = None,
    operating_points: ListArg = None, test_dataset: ListArg = None, allow_overlap: bool = False,
    subgroup: ListArg = None, calibrate: str | Calibration = Calibration.none,
    test: str | ComparisonTest = ComparisonTest.bootstrap, no_progress: bool = False,
    store: StoreArg = None,
) -> CompareResult:  # fmt: skip
    """Feature sets side by side on the same test images: paired bootstrap differences and p-values.

    Args:
        task: the task name.
        feature_set: two or more feature set ids (a list, or a comma-separated string); the first is the reference.
        layers: one layer per feature set (e.g. ``[8, -1]``; negative counts from that set's last stored layer);
            default: each set's best layer by CV.
        dataset, method, k, solver, c_grid, selection, grid, select_by, cv, test_split, class_weight,
        allow_missing (compare on the images common to all sets), allow_group_overlap, n_boot, boot_seed, device,
        operating_points, test_dataset, allow_overlap, subgroup, calibrate, no_progress, store: as in :func:`train`.
        test: ``bootstrap`` (the paired bootstrap of every metric), or ``delong`` (DeLong's test for correlated AUCs
            beside it: ``p_delong`` on the binary AUC row, ``auc:<class>`` rows one-vs-rest otherwise).
    """
    from medprobe.featurestore import start_run
    from medprobe.trainer.compare import best_layer, compare_external, compare_probes
    from medprobe.trainer.experiment import run_experiment
    from medprobe.trainer.external import check_external, score_external

    protocol = ProtocolArgs(dataset, method, k, solver, c_grid, selection, grid, select_by, cv, test_split,
                            class_weight, allow_missing, allow_group_overlap, n_boot, boot_seed, device,
                            operating_points, test_dataset, allow_overlap, subgroup, calibrate)  # fmt: skip
    st = open_store(store)
    ids = split_list(feature_set)
    specs, common = _compare_specs(st, task, ids, split_list(layers), protocol)
    chosen_test = choice(ComparisonTest, test, "--test")
    externals = split_list(protocol.test_dataset)
    overlaps = check_external(st, specs[0], externals, protocol.allow_overlap) if externals else {}
    params = {"feature_sets": ids, "layers": [s.layers for s in specs], "test": chosen_test.value,
              "test_dataset": externals, "allow_overlap": protocol.allow_overlap, **run_params(specs[0])}  # fmt: skip
    with start_run(st, "compare", params) as run:
        chosen = []
        with st.transaction():  # the compared probes and their comparison rows appear together, or not at all
            for s in specs:
                outs = run_experiment(st, s, run.run_id, only_hashes=common, show_progress=not no_progress)
                chosen.append((s.feature_set_id, best_layer(outs)))
            rows = compare_probes(run.run_id, specs[0].task, chosen, n_boot=protocol.n_boot, seed=protocol.boot_seed,
                                  delong=chosen_test is ComparisonTest.delong)  # fmt: skip
            for d in externals:  # each probe on each external dataset, compared on the images all of them scored
                scored = [score_external(st, s, o, d, run.run_id, overlaps[d]) for s, (_, o) in zip(specs, chosen,
                                                                                                     strict=True)]
                rows += compare_external(run.run_id, specs[0].task, chosen, scored, n_boot=protocol.n_boot,
                                         seed=protocol.boot_seed, delong=chosen_test is ComparisonTest.delong)
            st.append("probe_comparisons", rows)
        run.summary.update({"n_comparisons": len(rows), "n_test": len(chosen[0][1].test_hashes)})
    return CompareResult(
        run_id=run.run_id, kind="compare", task=specs[0].task.task, reference=chosen[0][0],
        test=metrics_doc(chosen[0][1].metrics),
        feature_sets=[{"feature_set_id": fs, "layer": o.layer, "probe_id": o.probe_id, "test": metrics_doc(o.metrics)}
                      for fs, o in chosen],
        comparisons=[r.model_dump(exclude={"created_at"}) for r in rows], dataset=specs[0].task.dataset,
        comparison_rows=rows,
    )  # fmt: skip


def load_probe(probe_id: str, *, store: StoreArg = None) -> StoredProbe:
    """The stored probe ``probe_id`` (a ``probe_results`` row) read back with its weights and standardisation:
    ``predict_proba`` on raw features of its feature set and layer, e.g. ``store.read(p.feature_set_id, p.layer,
    hashes)``; ``store``: a store URL or an open ``FeatureStore``."""
    from medprobe.trainer.stored import load_probe as read_probe

    return read_probe(open_store(store), probe_id)
