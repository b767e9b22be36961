"""Probe commands: train (one layer), sweep (every layer), compare (feature sets, paired), report (plots).

Each parses its options, calls the workflow function of the same name (``medprobe.train``, ...) with them and
renders the result; train and sweep share one command builder (their defaults differ only in the layers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from medprobe.cli.common import console, err_console
from medprobe.cli.options import (
    DeviceOpt,
    NoProgressOpt,
    OptionalDatasetOpt,
    Output,
    StoreOpt,
    TaskOpt,
    layers_option,
    with_group,
)
from medprobe.cli.output import wants_progress
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
from medprobe.workflows import probes as wf
from medprobe.workflows import reporting
from medprobe.workflows.common import N_BOOT


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
    """How probes are fitted, selected and scored (train, sweep and compare): ``medprobe.workflows.probes``."""

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
    grid: Annotated[
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
    operating_points: Annotated[
        list[str] | None,
        typer.Option(
            "--operating-points",
            help="Thresholds chosen on out-of-fold training predictions: youden, sens=S, spec=S (comma list; "
            "default youden,sens=0.9,spec=0.9).",
        ),
    ] = None
    test_dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--test-dataset",
            help="External test sets: datasets with the same task, scored once by the probe fitted here (comma list "
            "or repeated).",
        ),
    ] = None
    calibrate: Annotated[
        Calibration,
        typer.Option("--calibrate", help="temperature: fit one on out-of-fold training predictions, report after it."),
    ] = Calibration.none
    subgroup: Annotated[
        list[str] | None,
        typer.Option(
            "--subgroup",
            help="Metadata columns scored per group on the test rows: sex, site, age:4 (quartiles of the training "
            "rows); comma list or repeated.",
        ),
    ] = None
    allow_overlap: Annotated[
        bool, typer.Option("--allow-overlap", help="Score an external dataset sharing images with the training rows.")
    ] = False


@dataclass
class Subsampling:
    """Label efficiency: fit on stratified subsamples of the training rows."""

    train_fraction: Annotated[
        list[str] | None, typer.Option("--train-fraction", help="Fractions of the training rows, e.g. 0.01,0.1,1.")
    ] = None
    seeds: Annotated[
        list[str] | None, typer.Option("--seeds", help="Subsample seeds for fractions below 1 (default: 0,1,2).")
    ] = None


def format_entry(entry: dict[str, Any]) -> str:
    """A metric entry as ``value [low, high]`` (``undefined`` when it has no value)."""
    if entry.get("value") is None:
        return "undefined"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def not_converged_warnings(outcomes: list[Any]) -> list[str]:
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


def _print_clinical(o: Any) -> None:
    """Calibration and operating points of one probe (the best layer's)."""
    m = o.metrics
    if "brier" in m:
        console.print(f"layer {o.layer}: calibration Brier {format_entry(m['brier'])}, ECE ({m.get('ece_bins')} "
                      f"equal-mass bins) {format_entry(m['ece'])}", highlight=False)  # fmt: skip
    after = m.get("calibrated")
    if after:
        console.print(f"  after temperature {after['temperature']:.3f} ({after['fitted_on']}): Brier "
                      f"{format_entry(after['brier'])}, ECE {format_entry(after['ece'])}, macro AUC "
                      f"{format_entry(after['macro_auc'])}", highlight=False)  # fmt: skip
    points = m.get("operating_points")
    if not points:
        return
    table = Table(title=f"layer {o.layer}: operating points (thresholds from out-of-fold training predictions)")
    for col in ("class", "rule", "threshold", "sensitivity", "specificity", "PPV", "NPV", "F1"):
        table.add_column(col)
    for name, rows in points.items():
        for p in rows:
            cells = [format_entry(p[r]) if r in p else "-" for r in ("sensitivity", "specificity", "ppv", "npv", "f1")]
            threshold = "-" if p["threshold"] is None else f"{p['threshold']:.3f}"
            table.add_row(name, p["rule"], threshold, *cells)
    console.print(table)
    for sg in m.get("subgroups") or []:
        _print_subgroup(o.layer, sg)


def _print_subgroup(layer: int, sg: dict[str, Any], where: str = "") -> None:
    """One subgroup column: each group's size and metrics, flagged groups, and the largest gap."""
    table = Table(title=f"layer {layer}{where}: subgroups of {sg['column']} (groups under {sg['min_size']} test rows "
                  "flagged)")  # fmt: skip
    for col in ("group", "n", "macro AUC [95% CI]", "bal. acc"):
        table.add_column(col)
    for g in sg["groups"]:
        if "flagged" in g:
            table.add_row(g["group"], str(g["n"]), g["flagged"], "-")
        else:
            table.add_row(g["group"], str(g["n"]), format_entry(g["macro_auc"]), format_entry(g["balanced_accuracy"]))
    console.print(table)
    gap = sg.get("largest_gap")
    if gap:
        missing = f"; {sg['n_missing']} test rows without a value left out" if sg["n_missing"] else ""
        console.print(f"largest macro AUC gap: {gap['between'][0]} vs {gap['between'][1]} {format_entry(gap)}{missing}",
                      highlight=False)  # fmt: skip


def _print_external(external: list[dict[str, Any]]) -> None:
    """The best probe on each external test set."""
    if not external:
        return
    table = Table(title="external test sets (the probe fitted on the training dataset, applied unchanged)")
    for col in ("dataset", "layer", "scored", "labelled", "not extracted", "overlap", "macro AUC [95% CI]", "bal. acc",
                "Brier", "ECE"):  # fmt: skip
        table.add_column(col)
    for e in external:
        m = e["metrics"] or {}
        cells = [format_entry(m[k]) if k in m else "-" for k in ("macro_auc", "balanced_accuracy", "brier", "ece")]
        table.add_row(e["dataset"], str(e["layer"]), str(e["n_predicted"]), str(e["n_labelled"]),
                      str(e["n_missing_features"]), str(e["n_overlap"]), *cells)  # fmt: skip
    console.print(table)
    for e in external:
        for block in (e["metrics"] or {}).get("subgroups") or []:
            if "undefined" in block:
                console.print(f"{e['dataset']}: subgroups of {block['column']}: {block['undefined']}", highlight=False)
            else:
                _print_subgroup(e["layer"], block, where=f" on {e['dataset']}")


def _print_probes(result: wf.ProbeRunResult) -> None:
    table = Table(title=f"{result.kind}: {result.dataset}/{result.task}  run {result.run_id}")
    for col in ("layer", "fraction", "seed", "chosen", "cv", "macro AUC [95% CI]", "bal. acc", "macro F1", "acc"):
        table.add_column(col)
    for o in result.outcomes:
        m = o.metrics
        table.add_row(
            str(o.layer), f"{o.setting.fraction:g}", str(o.setting.seed), o.hyperparameter,
            "-" if o.cv_mean is None else f"{o.cv_mean:.3f}", format_entry(m["macro_auc"]),
            format_entry(m["balanced_accuracy"]), format_entry(m["macro_f1"]), format_entry(m["accuracy"]),
        )  # fmt: skip
    console.print(table)
    for o in result.outcomes[:1]:
        for key, why in o.metrics.get("undefined", {}).items():
            err_console.print(f"[yellow]warning:[/] {key}: {why}")
    for line in not_converged_warnings(result.outcomes):
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False)
    if result.n_missing_labels or result.n_missing_features:
        err_console.print(
            f"[yellow]note:[/] --allow-missing left out {result.n_missing_features} image(s) without features and "
            f"{result.n_missing_labels} without a {result.task!r} label", highlight=False,
        )  # fmt: skip
    best = next(o for o in result.outcomes if o.probe_id == result.probe_id)
    _print_clinical(best)
    _print_external(result.external)
    console.print(
        f"{'k' if result.method == 'knn' else 'C'} and the best layer chosen by {best.select_by} ({result.selection}, "
        f"training rows only): layer {result.layer}; run id: {result.run_id}"
    )


ProbeLayersOpt = Annotated[
    str | None, layers_option("stored layer of the feature set", "train: -1, the last stored; sweep: all stored")
]


def _probe_command(kind: str) -> Any:
    """The train or sweep command: the same options; train's layers default to the last, sweep's to all."""
    function = wf.train if kind == "train" else wf.sweep

    @with_group(FeatureSetChoice, "choice")
    @with_group(ProtocolOptions, "protocol")
    @with_group(Subsampling, "sampling")
    @with_group(Output, "output")
    def command(
        task: TaskOpt,
        choice: FeatureSetChoice,
        protocol: ProtocolOptions,
        sampling: Subsampling,
        output: Output,
        layers: ProbeLayersOpt = None,
    ) -> None:
        output.check()  # a bad --format/--out fails before any work
        options = {**dataclasses.asdict(choice), **dataclasses.asdict(protocol), **dataclasses.asdict(sampling)}
        options["no_progress"] = options["no_progress"] or not wants_progress(output.fmt, output.out)
        result = function(task=task, layers=layers, store=output.store, **options)
        output.render(result, show=lambda: _print_probes(result))

    command.__doc__ = (function.__doc__ or "").split("\n\n")[0]
    command.__name__ = kind
    return command


def _print_comparison(result: wf.CompareResult) -> None:
    table = Table(title=f"compare {result.dataset}/{result.task}  run {result.run_id}")
    delong = any(r.p_delong is not None for r in result.comparison_rows)
    cols = ["feature set (A)", "layer", "vs (B)", "metric", "A", "B", "A-B [95% CI]", "p boot", "p t-test"]
    for col in cols + (["p DeLong"] if delong else []):
        table.add_column(col)
    for r in result.comparison_rows:
        diff = "-" if r.diff is None else f"{r.diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        metric = r.metric if r.dataset == result.dataset else f"{r.metric} on {r.dataset}"
        table.add_row(
            r.feature_set_a, str(r.layer_a), f"{r.feature_set_b} (l{r.layer_b})", metric,
            "-" if r.value_a is None else f"{r.value_a:.3f}", "-" if r.value_b is None else f"{r.value_b:.3f}", diff,
            "-" if r.p_bootstrap is None else f"{r.p_bootstrap:.3g}", "-" if r.p_ttest is None else f"{r.p_ttest:.3g}",
            *(["-" if r.p_delong is None else f"{r.p_delong:.3g}"] if delong else []),
        )  # fmt: skip
    console.print(table)
    console.print("p t-test: the study's paired t-test over bootstrap replicates (shrinks with --n-boot)")


CompareLayersOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--layers", "--layer", "-l",
        help="One layer per feature set, e.g. 8,-1 (negative: counted from that set's last stored layer) "
        "(default: each set's best layer by CV).",
        show_default=False,
    ),
]  # fmt: skip


@with_group(ProtocolOptions, "protocol")
@with_group(Output, "output")
def compare(
    output: Output,
    task: TaskOpt,
    protocol: ProtocolOptions,
    feature_set: Annotated[
        list[str], typer.Option("--feature-set", help="Two or more feature set ids (comma list or repeated).")
    ],
    layers: CompareLayersOpt = None,
    test: Annotated[
        ComparisonTest, typer.Option("--test", help="bootstrap, or delong: DeLong's test for AUCs beside it.")
    ] = ComparisonTest.bootstrap,
) -> None:
    """Feature sets side by side on the same test images: paired bootstrap differences and p-values."""
    output.check()
    options = dataclasses.asdict(protocol)
    options["no_progress"] = options["no_progress"] or not wants_progress(output.fmt, output.out)
    result = wf.compare(task=task, feature_set=feature_set, layers=layers, test=test, store=output.store, **options)
    output.render(result, show=lambda: _print_comparison(result))


def report(
    run_ids: Annotated[list[str], typer.Argument(help="Run ids of train/sweep/compare runs.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the PNGs and summary.md.")] = "medprobe-report",
    store: StoreOpt = None,
) -> None:
    """PNG plots (layer curves, ROC, label efficiency, comparisons) and a Markdown summary of runs."""
    result = reporting.report(run_ids=run_ids, out=out, store=store)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning} (flagged in summary.md)", highlight=False)
    for p in result.paths:
        console.print(p)


def register(app: typer.Typer) -> None:
    """Add train, sweep, compare and report."""
    app.command("train")(_probe_command("train"))
    app.command("sweep")(_probe_command("sweep"))
    app.command("compare")(compare)
    app.command("report")(report)
