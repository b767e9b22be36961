"""Probe commands: train (one layer), sweep (every layer), compare (feature sets, paired), report (plots).

``train`` and ``sweep`` are one implementation (:func:`_probe_command`) that differ only in their default layers
and in whether several layers may be named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from medprobe.cli.common import console, err_console, open_store
from medprobe.cli.options import (
    DeviceOpt,
    FormatOpt,
    NoProgressOpt,
    OptionalDatasetOpt,
    OutOpt,
    StoreOpt,
    TaskOpt,
    float_list,
    int_list,
    layers_option,
    retired,
    split_list,
    with_group,
)
from medprobe.cli.output import emit, resolve_format, wants_progress
from medprobe.errors import InvalidInputError
from medprobe.layerspec import resolve_layer, resolve_layers
from medprobe.schemas.vocab import CGrid, ClassWeight, Method, SelectBy, Selection, SolverName, TestSplit
from medprobe.trainer.defaults import DEFAULT_C_GRID, N_BOOT

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore
    from medprobe.trainer.experiment import ExperimentSpec, ProbeOutcome
    from medprobe.trainer.protocol import Setting


@dataclass
class FeatureSetChoice:
    """Which feature set: by id, or by the model (and prompt, pooling) it was extracted with."""

    feature_set: Annotated[str | None, typer.Option("--feature-set", help="Feature set id.")] = None
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="... or the feature set extracted with this model")
    ] = None
    prompt: Annotated[str | None, typer.Option("--prompt", help="... and this prompt.")] = None
    pooling: Annotated[str | None, typer.Option("--pooling", help="... and this pooling.")] = None


@dataclass
class ProtocolOptions:
    """How probes are fitted, selected and scored (train, sweep and compare)."""

    dataset: OptionalDatasetOpt = None
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="probe: L2 logistic regression, C chosen by --selection; knn: cosine kNN with exp(sim/0.07) votes "
            "(DINOv2), k chosen from --k by the same --selection on training rows.",
        ),
    ] = Method.probe
    k: Annotated[
        list[str] | None,
        typer.Option(
            "--k",
            help="--method knn: neighbours to choose from (default: 10,20,50,100,200); one value: that k.",
            show_default=False,
        ),
    ] = None
    solver: Annotated[SolverName, typer.Option("--solver", help="Probe solver.")] = SolverName.torch
    c_grid: Annotated[
        list[str] | None,
        typer.Option("--c-grid", help="C values, a log grid (default: 1e-4,1e-3,...,1000).", show_default=False),
    ] = None
    selection: Annotated[
        Selection, typer.Option("--selection", help="Choose C by grouped stratified K-fold CV or on the val split.")
    ] = Selection.cv
    c_path: Annotated[
        CGrid,
        typer.Option(
            "--grid",
            help="adaptive: fit C from the smallest up, each C starting from the previous C's solution, and stop once "
            "the validation score has clearly turned (large C costs the most); full: fit every C of --c-grid.",
        ),
    ] = CGrid.adaptive
    no_progress: NoProgressOpt = False
    select_by: Annotated[
        SelectBy | None,
        typer.Option(
            "--select-by",
            help="The validation metric that chooses C (default: the task's primary metric); ties between C values "
            "are broken by held-out log loss.",
            show_default=False,
        ),
    ] = None
    cv: Annotated[int, typer.Option("--cv", min=2, help="Folds for --selection cv.")] = 5
    test_split: Annotated[
        TestSplit,
        typer.Option(
            "--test-split",
            help="The split scored once as the test set (val: for datasets that ship only train/val; probes then "
            "fit and select C on train only).",
        ),
    ] = TestSplit.test
    class_weight: Annotated[ClassWeight, typer.Option("--class-weight", help="Class weights of the loss.")] = (
        ClassWeight.none
    )
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Train on the images that have labels and features.")
    ] = False
    allow_group_overlap: Annotated[
        bool,
        typer.Option(
            "--allow-group-overlap", help="Train even when a patient group has rows in both training and test splits."
        ),
    ] = False
    n_boot: Annotated[int, typer.Option("--n-boot", min=1, help="Bootstrap replicates for the CIs.")] = N_BOOT
    boot_seed: Annotated[int, typer.Option("--boot-seed", help="Seed of the bootstrap replicates.")] = 0
    device: DeviceOpt = None

    def k_grid(self) -> list[int]:
        """The k values of --method knn (positive integers), or the default grid."""
        from medprobe.trainer.knn import DEFAULT_K_GRID

        if self.k is None:
            return list(DEFAULT_K_GRID)
        if self.method is not Method.knn:
            raise InvalidInputError("--k is for --method knn; drop it or add --method knn")
        values = int_list(self.k, "--k")
        bad = [v for v in values if v < 1]
        if not values or bad:
            raise InvalidInputError(f"--k takes positive integers, e.g. --k 10,20,50; got {','.join(self.k)!r}")
        return sorted(set(values))

    def grid(self) -> list[float]:
        """The C grid: given values (positive, finite, at least one) or the default log grid."""
        if self.c_grid is None:
            return list(DEFAULT_C_GRID)
        values = float_list(self.c_grid, "--c-grid")
        if not values:
            raise InvalidInputError(f"--c-grid {','.join(self.c_grid)!r} names no C value; e.g. --c-grid 0.01,0.1,1")
        bad = [v for v in values if not (math.isfinite(v) and v > 0)]
        if bad:
            raise InvalidInputError(f"--c-grid: every C must be a positive finite number; got {bad}")
        return sorted(set(values))


@dataclass
class Subsampling:
    """Label efficiency: fit on stratified subsamples of the training rows."""

    train_fraction: Annotated[
        list[str] | None, typer.Option("--train-fraction", help="Fractions of the training rows, e.g. 0.01,0.1,1.")
    ] = None
    seeds: Annotated[
        list[str] | None, typer.Option("--seeds", help="Subsample seeds for fractions below 1 (default: 0,1,2).")
    ] = None


def _spec(
    store: FeatureStore,
    *,
    task: str,
    feature_set_id: str,
    layers: list[int],
    protocol: ProtocolOptions,
    sampling: Subsampling | None = None,
) -> ExperimentSpec:
    from medprobe.trainer.data import resolve_task
    from medprobe.trainer.experiment import ExperimentSpec

    return ExperimentSpec(
        feature_set_id=feature_set_id,
        task=resolve_task(store, task, protocol.dataset),
        layers=layers,
        solver=protocol.solver.value,
        c_grid=protocol.grid(),
        selection=protocol.selection.value,
        grid=protocol.c_path.value,
        select_by=None if protocol.select_by is None else protocol.select_by.value,
        n_splits=protocol.cv,
        test_split=protocol.test_split.value,
        fractions=_fractions(sampling),
        seeds=_seeds(sampling),
        class_weight=None if protocol.class_weight is ClassWeight.none else protocol.class_weight.value,
        allow_missing=protocol.allow_missing,
        allow_group_overlap=protocol.allow_group_overlap,
        n_boot=protocol.n_boot,
        seed=protocol.boot_seed,
        device=protocol.device,
        method=protocol.method.value,
        k_grid=protocol.k_grid(),
    )  # fmt: skip


def _fractions(sampling: Subsampling | None) -> list[float]:
    if sampling is None or sampling.train_fraction is None:
        return [1.0]
    values = float_list(sampling.train_fraction, "--train-fraction")
    if not values:
        raise InvalidInputError("--train-fraction names no fraction; e.g. --train-fraction 0.1,0.5,1")
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise InvalidInputError(f"--train-fraction values must lie in (0, 1]; got {bad}")
    return sorted(set(values))


def _seeds(sampling: Subsampling | None) -> list[int]:
    if sampling is None or sampling.seeds is None:
        return [0, 1, 2]
    values = int_list(sampling.seeds, "--seeds")
    if not values:
        raise InvalidInputError("--seeds names no seed; e.g. --seeds 0,1,2")
    return list(dict.fromkeys(values))


def stored_layers(store: FeatureStore, feature_set_id: str) -> list[int]:
    """The layers a feature set has rows for; InvalidInputError when it has none."""
    stored = store.layers(feature_set_id)
    if not stored:
        raise InvalidInputError(f"feature set {feature_set_id} has no extracted rows: run `medprobe extract`")
    return stored


def _params(spec: ExperimentSpec) -> dict[str, Any]:
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
        "seed": spec.seed,
    }


def metrics_doc(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "auc_per_class", "label_precision_at_k",
            "undefined")  # fmt: skip
    return {k: metrics[k] for k in keys if k in metrics}


def _probe_row(o: ProbeOutcome) -> dict[str, Any]:
    """One probe as a flat row (the csv/parquet output) with its test metrics and CIs."""
    row: dict[str, Any] = {
        "probe_id": o.probe_id,
        "layer": o.layer,
        "train_fraction": o.setting.fraction,
        "seed": o.setting.seed,
        "C": o.C,
        "selection": o.selection,
        "cv_mean": o.cv_mean,
        "selected_by": o.select_by,
        "c_tied": o.tied,
        "n_train": o.n_train,
        "n_test": len(o.y_test),
        "method": o.method,
        "k": o.k,
        "converged": o.converged,
        "n_iter": o.n_iter,
        "cv_not_converged": sum(o.cv_not_converged.values()),
    }
    for key in ("macro_auc", "balanced_accuracy", "macro_f1", "accuracy"):
        entry = o.metrics.get(key) or {}
        row[key] = entry.get("value")
        row[f"{key}_ci_low"] = entry.get("ci_low")
        row[f"{key}_ci_high"] = entry.get("ci_high")
    return row


def _probe_json(o: ProbeOutcome) -> dict[str, Any]:
    keys = ("probe_id", "method", "layer", "train_fraction", "seed", "C", "k", "selection", "selected_by", "c_tied",
            "cv_mean", "n_train", "n_test")  # fmt: skip
    row = _probe_row(o)
    return {**{k: row[k] for k in keys}, "converged": o.converged, "n_iter": o.n_iter,
            "cv_not_converged": o.cv_not_converged, "test": metrics_doc(o.metrics)}  # fmt: skip


def format_entry(entry: dict[str, Any]) -> str:
    if entry.get("value") is None:
        return "undefined"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def _setting_label(s: Setting) -> tuple[str, str]:
    return f"{s.fraction:g}", str(s.seed)


def _print_outcomes(run_id: str, outcomes: list[ProbeOutcome], title: str) -> None:
    table = Table(title=f"{title}  run {run_id}")
    for col in ("layer", "fraction", "seed", "chosen", "cv", "macro AUC [95% CI]", "bal. acc", "macro F1", "acc"):
        table.add_column(col)
    for o in outcomes:
        m = o.metrics
        table.add_row(
            str(o.layer),
            *_setting_label(o.setting),
            o.hyperparameter,
            "-" if o.cv_mean is None else f"{o.cv_mean:.3f}",
            format_entry(m["macro_auc"]),
            format_entry(m["balanced_accuracy"]),
            format_entry(m["macro_f1"]),
            format_entry(m["accuracy"]),
        )
    console.print(table)
    for o in outcomes[:1]:
        for key, why in o.metrics.get("undefined", {}).items():
            err_console.print(f"[yellow]warning:[/] {key}: {why}")
    for line in not_converged_warnings(outcomes):
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False)


def not_converged_warnings(outcomes: list[ProbeOutcome]) -> list[str]:
    """One line per probe whose chosen C, or whose refit, rests on probes that stopped at the iteration cap."""
    lines = []
    for o in outcomes:
        at_c = o.cv_not_converged.get(repr(o.C), 0)
        if at_c or not o.converged:
            what = []
            if at_c:
                what.append(f"{at_c} fold probe(s) at the chosen C={o.C:g}")
            if not o.converged:
                what.append("the refit")
            lines.append(
                f"layer {o.layer}: {' and '.join(what)} stopped at the iteration cap before converging, so the "
                "scores are approximate; narrow --c-grid to smaller C or pass --solver sklearn to compare"
            )
    unchosen = [o for o in outcomes if o.cv_not_converged and not o.cv_not_converged.get(repr(o.C), 0)]
    if unchosen:
        cs = ", ".join(f"{c:g}" for c in sorted({float(c) for o in unchosen for c in o.cv_not_converged}))
        lines.append(
            f"{len(unchosen)} probe(s): fold probes at C={cs} stopped at the iteration cap; "
            "those C values were not chosen, but their validation scores are approximate (cv_not_converged in metrics)"
        )
    return lines


def _run_probes(
    kind: str,
    store_url: str | None,
    *,
    task: str,
    layers: str | None,
    choice: FeatureSetChoice,
    protocol: ProtocolOptions,
    sampling: Subsampling,
    fmt: str | None,
    out: str | None,
) -> None:
    """train and sweep: resolve the feature set and layers, fit, record the run, print or write the result."""
    from medprobe.featurestore import start_run
    from medprobe.trainer.compare import best_layer
    from medprobe.trainer.data import resolve_feature_set
    from medprobe.trainer.experiment import run_experiment

    resolve_format(fmt, out)  # a bad --format/--out fails before any work
    store = open_store(store_url)
    fs = resolve_feature_set(store, choice.feature_set, choice.model, choice.prompt, choice.pooling)
    stored = stored_layers(store, fs.feature_set_id)
    what = f"feature set {fs.feature_set_id}"
    if kind == "train":
        chosen = [resolve_layer("-1" if layers is None else layers, stored, what=what)]
    else:
        chosen = resolve_layers("all" if layers is None else layers, stored, what=what)
    spec = _spec(store, task=task, feature_set_id=fs.feature_set_id, layers=chosen, protocol=protocol,
                 sampling=sampling)  # fmt: skip
    with start_run(store, kind, _params(spec)) as run:
        outcomes = run_experiment(
            store, spec, run.run_id, show_progress=not protocol.no_progress and wants_progress(fmt, out)
        )
        best = best_layer(outcomes)
        run.summary.update(
            {
                "n_probes": len(outcomes),
                "best_layer": best.layer,
                "best_probe": best.probe_id,
                "test_macro_auc": best.metrics["macro_auc"]["value"],
            }
        )
    document = {
        "run_id": run.run_id,
        "kind": kind,
        "feature_set_id": spec.feature_set_id,
        "dataset": spec.task.dataset,
        "task": spec.task.task,
        "class_names": list(spec.task.class_names),
        "layer": best.layer,
        "probe_id": best.probe_id,
        "method": best.method,
        "C": best.C,
        "k": best.k,
        "test": metrics_doc(best.metrics),
        "probes": [_probe_json(o) for o in outcomes],
    }

    def show() -> None:
        _print_outcomes(run.run_id, outcomes, f"{kind}: {spec.task.dataset}/{spec.task.task}")
        console.print(
            f"{'k' if spec.method == 'knn' else 'C'} and the best layer chosen by {best.select_by} ({spec.selection}, "
            "training rows only): layer "
            f"{best.layer}; run id: {run.run_id}"
        )

    rows = [{"run_id": run.run_id, "feature_set_id": spec.feature_set_id, **_probe_row(o)} for o in outcomes]
    emit(fmt, out, rows=rows, document=document, show=show)


ProbeLayersOpt = Annotated[
    str | None, layers_option("stored layer of the feature set", "train: -1, the last stored; sweep: all stored")
]
_TRAIN_DOC = "Fit one probe (one feature set, one layer, one task): C by CV, refit, test once with bootstrap CIs."
_SWEEP_DOC = "Probe every layer of a feature set (the per-layer metric curve); all layers x folds x C in one solve."


def _probe_command(kind: str) -> Any:
    """The train or sweep command: the same options; train's layers default to the last, sweep's to all."""

    @retired(output="--output -> -f/--format json", seed="--seed -> --boot-seed (bootstrap) or --seeds (subsamples)")
    @with_group(FeatureSetChoice, "choice")
    @with_group(ProtocolOptions, "protocol")
    @with_group(Subsampling, "sampling")
    def command(
        task: TaskOpt,
        choice: FeatureSetChoice,
        protocol: ProtocolOptions,
        sampling: Subsampling,
        layers: ProbeLayersOpt = None,
        fmt: FormatOpt = None,
        out: OutOpt = None,
        store: StoreOpt = None,
    ) -> None:
        _run_probes(kind, store, task=task, layers=layers, choice=choice, protocol=protocol, sampling=sampling,
                    fmt=fmt, out=out)  # fmt: skip

    command.__doc__ = _TRAIN_DOC if kind == "train" else _SWEEP_DOC
    command.__name__ = kind
    return command


def _compare(
    task: str,
    feature_sets: list[str],
    layers: list[str],
    protocol: ProtocolOptions,
    fmt: str | None,
    out: str | None,
    store_url: str | None,
) -> None:
    from medprobe.featurestore import start_run
    from medprobe.trainer.compare import best_layer, compare_probes
    from medprobe.trainer.experiment import prepare, run_experiment

    resolve_format(fmt, out)
    if len(feature_sets) < 2:
        raise InvalidInputError("compare needs at least two feature sets (--feature-set A,B)")
    if layers and len(layers) != len(feature_sets):
        raise InvalidInputError("give one --layers value per --feature-set (e.g. -l 8,-1), or none (best layer by CV)")
    st = open_store(store_url)
    specs = []
    for i, fs in enumerate(feature_sets):
        st.feature_set(fs)
        stored = stored_layers(st, fs)
        chosen = [resolve_layer(layers[i], stored, what=f"feature set {fs}")] if layers else stored
        specs.append(_spec(st, task=task, feature_set_id=fs, layers=chosen, protocol=protocol))
    common = set.intersection(*(set(prepare(st, s).image_hashes) for s in specs))
    for s in specs:
        n_all = len(prepare(st, s).image_hashes)
        if n_all != len(common) and not protocol.allow_missing:
            raise InvalidInputError(
                f"feature set {s.feature_set_id} covers {n_all} labelled images but only {len(common)} are "
                "common to all compared sets: pass --allow-missing to compare on the common images"
            )
    params = {"feature_sets": feature_sets, "layers": [s.layers for s in specs], **_params(specs[0])}
    with start_run(st, "compare", params) as run:
        chosen_probes = []
        with st.transaction():  # the compared probes and their comparison rows appear together, or not at all
            for s in specs:
                bar = not protocol.no_progress and wants_progress(fmt, out)
                outs = run_experiment(st, s, run.run_id, only_hashes=common, show_progress=bar)
                chosen_probes.append((s.feature_set_id, best_layer(outs)))
            rows = compare_probes(run.run_id, specs[0].task, chosen_probes, n_boot=protocol.n_boot,
                                  seed=protocol.boot_seed)  # fmt: skip
            st.append("probe_comparisons", rows)
        run.summary.update({"n_comparisons": len(rows), "n_test": len(chosen_probes[0][1].test_hashes)})
    document = {
        "run_id": run.run_id,
        "kind": "compare",
        "task": specs[0].task.task,
        "reference": chosen_probes[0][0],
        "test": metrics_doc(chosen_probes[0][1].metrics),
        "feature_sets": [
            {"feature_set_id": fs, "layer": o.layer, "probe_id": o.probe_id, "test": metrics_doc(o.metrics)}
            for fs, o in chosen_probes
        ],
        "comparisons": [r.model_dump(exclude={"created_at"}) for r in rows],
    }

    def show() -> None:
        table = Table(title=f"compare {specs[0].task.dataset}/{specs[0].task.task}  run {run.run_id}")
        for col in ("feature set (A)", "layer", "vs (B)", "metric", "A", "B", "A-B [95% CI]", "p boot", "p t-test"):
            table.add_column(col)
        for r in rows:
            diff = "-" if r.diff is None else f"{r.diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            table.add_row(
                r.feature_set_a,
                str(r.layer_a),
                f"{r.feature_set_b} (l{r.layer_b})",
                r.metric,
                "-" if r.value_a is None else f"{r.value_a:.3f}",
                "-" if r.value_b is None else f"{r.value_b:.3f}",
                diff,
                "-" if r.p_bootstrap is None else f"{r.p_bootstrap:.3g}",
                "-" if r.p_ttest is None else f"{r.p_ttest:.3g}",
            )
        console.print(table)
        console.print("p t-test: the study's paired t-test over bootstrap replicates (shrinks with --n-boot)")

    emit(fmt, out, rows=[r.model_dump() for r in rows], document=document, show=show)


def register(app: typer.Typer) -> None:
    """Add train, sweep, compare and report."""
    app.command("train")(_probe_command("train"))
    app.command("sweep")(_probe_command("sweep"))

    @app.command()
    @retired(output="--output -> -f/--format json", seed="--seed -> --boot-seed")
    @with_group(ProtocolOptions, "protocol")
    def compare(
        task: TaskOpt,
        protocol: ProtocolOptions,
        feature_set: Annotated[
            list[str], typer.Option("--feature-set", help="Two or more feature set ids (comma list or repeated).")
        ],
        layers: Annotated[
            list[str] | None,
            typer.Option(
                "--layers",
                "--layer",
                "-l",
                help="One layer per feature set, e.g. 8,-1 (negative: counted from that set's last stored layer) "
                "(default: each set's best layer by CV).",
                show_default=False,
            ),
        ] = None,
        fmt: FormatOpt = None,
        out: OutOpt = None,
        store: StoreOpt = None,
    ) -> None:
        """Feature sets side by side on the same test images: paired bootstrap differences and p-values."""
        _compare(task, split_list(feature_set), split_list(layers), protocol, fmt, out, store)

    @app.command()
    def report(
        run_ids: Annotated[list[str], typer.Argument(help="Run ids of train/sweep/compare runs.")],
        out: Annotated[str, typer.Option("--out", "-o", help="Folder for the PNGs and summary.md.")] = (
            "medprobe-report"
        ),
        store: StoreOpt = None,
    ) -> None:
        """PNG plots (layer curves, ROC, label efficiency, comparisons) and a Markdown summary of runs."""
        from medprobe.trainer.report import incomplete_runs, write_report

        st = open_store(store)
        for warning in incomplete_runs(st, run_ids):
            err_console.print(f"[yellow]warning:[/] {warning} (flagged in summary.md)", highlight=False)
        paths = write_report(st, run_ids, out)
        for p in paths:
            console.print(str(p))
