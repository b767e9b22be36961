"""Probe commands: train (one layer), sweep (every layer), compare (feature sets, paired), report (plots)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from medprobe.cli.common import StoreOption, console, err_console, open_store
from medprobe.errors import InvalidInputError


class Output(StrEnum):
    text = "text"
    json = "json"


TaskOpt = Annotated[str, typer.Option("--task", "-t", help="Task name (see `medprobe sql 'select * from tasks'`).")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset of the task, when ambiguous.")]
FeatureSetOpt = Annotated[str | None, typer.Option("--feature-set", "-f", help="Feature set id.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Pick the feature set extracted with this model.")]
PromptOpt = Annotated[str | None, typer.Option("--prompt", help="... and this prompt.")]
PoolingOpt = Annotated[str | None, typer.Option("--pooling", help="... and this pooling.")]
SolverOpt = Annotated[str, typer.Option("--solver", help="torch | sklearn | cuml.")]
CGridOpt = Annotated[str, typer.Option("--c-grid", help="Comma-separated C values (log grid).")]
SelectionOpt = Annotated[str, typer.Option("--selection", help="cv (grouped stratified K-fold) or val split.")]
CvOpt = Annotated[int, typer.Option("--cv", help="Folds for --selection cv.")]
TestSplitOpt = Annotated[
    str,
    typer.Option(
        "--test-split",
        help="The split scored once as the test set: test, or val for datasets that ship only train/val "
        "(probes then fit and select C on train only; test rows are never trained on).",
    ),
]
FractionOpt = Annotated[str, typer.Option("--train-fraction", help="Label efficiency: e.g. 0.01,0.1,0.5,1.")]
SeedsOpt = Annotated[str, typer.Option("--seeds", help="Subsample seeds for fractions below 1, e.g. 0,1,2.")]
ClassWeightOpt = Annotated[str, typer.Option("--class-weight", help="none | balanced.")]
AllowMissingOpt = Annotated[bool, typer.Option("--allow-missing", help="Train on the images that have labels.")]
BootOpt = Annotated[int, typer.Option("--n-boot", help="Bootstrap replicates for the CIs.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="torch device (default: cuda if present).")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json (one JSON object).")]

DEFAULT_C = "1e-4,1e-3,1e-2,1e-1,1,10,100,1000"


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise InvalidInputError(f"{what}: cannot read {text!r} as comma-separated numbers") from e


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise InvalidInputError(f"{what}: cannot read {text!r} as comma-separated integers") from e


def _spec(
    store,
    *,
    task,
    dataset,
    feature_set,
    model,
    prompt,
    pooling,
    layers,
    solver,
    c_grid,
    selection,
    cv,
    test_split,
    train_fraction,
    seeds,
    class_weight,
    allow_missing,
    n_boot,
    seed,
    device,
):
    from medprobe.trainer.data import resolve_feature_set, resolve_task
    from medprobe.trainer.experiment import ExperimentSpec

    fs = resolve_feature_set(store, feature_set, model, prompt, pooling)
    task_row = resolve_task(store, task, dataset)
    stored = store.layers(fs.feature_set_id)
    if not stored:
        raise InvalidInputError(f"feature set {fs.feature_set_id} has no extracted rows: run `medprobe extract`")
    if layers is None:
        layers = stored
    elif layers == "last":
        layers = stored[-1:]
    missing = [x for x in layers if x not in stored]
    if missing:
        raise InvalidInputError(f"feature set {fs.feature_set_id} has no layer(s) {missing}; stored layers: {stored}")
    if class_weight not in ("none", "balanced"):
        raise InvalidInputError(f"--class-weight must be none or balanced, got {class_weight!r}")
    if selection not in ("cv", "val"):
        raise InvalidInputError(f"--selection must be cv or val, got {selection!r}")
    return ExperimentSpec(
        feature_set_id=fs.feature_set_id,
        task=task_row,
        layers=list(layers),
        solver=solver,
        c_grid=_floats(c_grid, "--c-grid"),
        selection=selection,
        n_splits=cv,
        test_split=test_split,
        fractions=_floats(train_fraction, "--train-fraction"),
        seeds=_ints(seeds, "--seeds"),
        class_weight=None if class_weight == "none" else class_weight,
        allow_missing=allow_missing,
        n_boot=n_boot,
        seed=seed,
        device=device,
    )


def _params(spec) -> dict:
    return {
        "feature_set_id": spec.feature_set_id,
        "dataset": spec.task.dataset,
        "task": spec.task.task,
        "layers": spec.layers,
        "solver": spec.solver,
        "c_grid": list(spec.c_grid),
        "selection": spec.selection,
        "cv": spec.n_splits,
        "test_split": spec.test_split,
        "train_fraction": list(spec.fractions),
        "seeds": list(spec.seeds),
        "class_weight": spec.class_weight,
        "n_boot": spec.n_boot,
        "seed": spec.seed,
    }


def _probe_json(o) -> dict:
    return {
        "probe_id": o.probe_id,
        "layer": o.layer,
        "train_fraction": o.setting.fraction,
        "seed": o.setting.seed,
        "C": o.C,
        "selection": o.selection,
        "cv_mean": o.cv_mean,
        "n_train": o.n_train,
        "n_test": len(o.y_test),
        "converged": o.probe.converged,
        "n_iter": o.probe.n_iter,
        "test": _test_json(o.metrics),
    }


def _test_json(metrics: dict) -> dict:
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "auc_per_class", "undefined")
    return {k: metrics[k] for k in keys if k in metrics}


def _fmt(entry: dict) -> str:
    if entry.get("value") is None:
        return "undefined"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def _print_outcomes(run_id: str, spec, outcomes, title: str) -> None:
    table = Table(title=f"{title}  run {run_id}")
    for col in ("layer", "fraction", "seed", "C", "cv", "macro AUC [95% CI]", "bal. acc", "macro F1", "acc"):
        table.add_column(col)
    for o in outcomes:
        m = o.metrics
        table.add_row(
            str(o.layer),
            f"{o.setting.fraction:g}",
            str(o.setting.seed),
            f"{o.C:g}",
            "-" if o.cv_mean is None else f"{o.cv_mean:.3f}",
            _fmt(m["macro_auc"]),
            _fmt(m["balanced_accuracy"]),
            _fmt(m["macro_f1"]),
            _fmt(m["accuracy"]),
        )
    console.print(table)
    for o in outcomes[:1]:
        for key, why in o.metrics.get("undefined", {}).items():
            err_console.print(f"[yellow]warning:[/] {key}: {why}")


def _forwarded(options: dict, **overrides) -> dict:
    """A command's own options as keyword arguments for ``_spec`` (store, output and layer choice apart)."""
    kw = {k: v for k, v in options.items() if k not in ("store", "output", "layer", "layers")}
    kw.update(overrides)
    return kw


def _run(kind: str, store_url, output: Output, **kw) -> None:
    from medprobe.featurestore.runs import start_run
    from medprobe.trainer.compare import best_layer
    from medprobe.trainer.experiment import run_experiment

    store = open_store(store_url)
    spec = _spec(store, **kw)
    with start_run(store, kind, _params(spec)) as run:
        outcomes = run_experiment(store, spec, run.run_id, show_progress=output is Output.text)
        best = best_layer(outcomes)
        run.summary.update(
            {
                "n_probes": len(outcomes),
                "best_layer": best.layer,
                "best_probe": best.probe_id,
                "test_macro_auc": best.metrics["macro_auc"]["value"],
            }
        )
    if output is Output.json:
        doc = {
            "run_id": run.run_id,
            "kind": kind,
            "feature_set_id": spec.feature_set_id,
            "dataset": spec.task.dataset,
            "task": spec.task.task,
            "class_names": list(spec.task.class_names),
            "layer": best.layer,
            "probe_id": best.probe_id,
            "C": best.C,
            "test": _test_json(best.metrics),
            "probes": [_probe_json(o) for o in outcomes],
        }
        typer.echo(json.dumps(doc, default=float))
    else:
        _print_outcomes(run.run_id, spec, outcomes, f"{kind}: {spec.task.dataset}/{spec.task.task}")
        console.print(f"best layer by {spec.selection} (training rows only): {best.layer}; run id: {run.run_id}")


def register(app: typer.Typer) -> None:
    """Add train, sweep, compare and report."""

    @app.command()
    def train(
        task: TaskOpt,
        layer: Annotated[
            int | None, typer.Option("--layer", "-l", help="Layer index [default: the last stored].")
        ] = None,
        dataset: DatasetOpt = None,
        feature_set: FeatureSetOpt = None,
        model: ModelOpt = None,
        prompt: PromptOpt = None,
        pooling: PoolingOpt = None,
        solver: SolverOpt = "torch",
        c_grid: CGridOpt = DEFAULT_C,
        selection: SelectionOpt = "cv",
        cv: CvOpt = 5,
        test_split: TestSplitOpt = "test",
        train_fraction: FractionOpt = "1",
        seeds: SeedsOpt = "0,1,2",
        class_weight: ClassWeightOpt = "none",
        allow_missing: AllowMissingOpt = False,
        n_boot: BootOpt = 1000,
        seed: SeedOpt = 0,
        device: DeviceOpt = None,
        output: OutputOpt = Output.text,
        store: StoreOption = None,
    ) -> None:
        """Fit one probe (one feature set, one layer, one task): C by CV, refit, test once with bootstrap CIs."""
        _run("train", store, output, **_forwarded(locals(), layers="last" if layer is None else [layer]))

    @app.command()
    def sweep(
        task: TaskOpt,
        layers: Annotated[str | None, typer.Option("--layers", help="Comma-separated layers [default: all].")] = None,
        dataset: DatasetOpt = None,
        feature_set: FeatureSetOpt = None,
        model: ModelOpt = None,
        prompt: PromptOpt = None,
        pooling: PoolingOpt = None,
        solver: SolverOpt = "torch",
        c_grid: CGridOpt = DEFAULT_C,
        selection: SelectionOpt = "cv",
        cv: CvOpt = 5,
        test_split: TestSplitOpt = "test",
        train_fraction: FractionOpt = "1",
        seeds: SeedsOpt = "0,1,2",
        class_weight: ClassWeightOpt = "none",
        allow_missing: AllowMissingOpt = False,
        n_boot: BootOpt = 1000,
        seed: SeedOpt = 0,
        device: DeviceOpt = None,
        output: OutputOpt = Output.text,
        store: StoreOption = None,
    ) -> None:
        """Probe every layer of a feature set (the per-layer metric curve); all layers x folds x C in one solve."""
        _run(
            "sweep", store, output, **_forwarded(locals(), layers=None if layers is None else _ints(layers, "--layers"))
        )

    @app.command()
    def compare(
        task: TaskOpt,
        feature_set: Annotated[list[str], typer.Option("--feature-set", "-f", help="Two or more feature set ids.")],
        layer: Annotated[
            list[int] | None, typer.Option("--layer", "-l", help="Layer per feature set [default: best by CV].")
        ] = None,
        dataset: DatasetOpt = None,
        solver: SolverOpt = "torch",
        c_grid: CGridOpt = DEFAULT_C,
        selection: SelectionOpt = "cv",
        cv: CvOpt = 5,
        test_split: TestSplitOpt = "test",
        class_weight: ClassWeightOpt = "none",
        allow_missing: AllowMissingOpt = False,
        n_boot: BootOpt = 1000,
        seed: SeedOpt = 0,
        device: DeviceOpt = None,
        output: OutputOpt = Output.text,
        store: StoreOption = None,
    ) -> None:
        """Feature sets side by side on the same test images: paired bootstrap differences and p-values."""
        from medprobe.featurestore.runs import start_run
        from medprobe.trainer.compare import best_layer, compare_probes
        from medprobe.trainer.experiment import prepare, run_experiment

        if len(feature_set) < 2:
            raise InvalidInputError("compare needs at least two --feature-set options")
        if layer and len(layer) != len(feature_set):
            raise InvalidInputError("give one --layer per --feature-set, or none (best layer by CV)")
        st = open_store(store)
        specs = []
        for i, fs in enumerate(feature_set):
            specs.append(
                _spec(
                    st,
                    task=task,
                    dataset=dataset,
                    feature_set=fs,
                    model=None,
                    prompt=None,
                    pooling=None,
                    layers=[layer[i]] if layer else None,
                    solver=solver,
                    c_grid=c_grid,
                    selection=selection,
                    cv=cv,
                    test_split=test_split,
                    train_fraction="1",
                    seeds="0",
                    class_weight=class_weight,
                    allow_missing=allow_missing,
                    n_boot=n_boot,
                    seed=seed,
                    device=device,
                )
            )
        common = set.intersection(*(set(prepare(st, s).image_hashes) for s in specs))
        for s in specs:
            n_all = len(prepare(st, s).image_hashes)
            if n_all != len(common) and not allow_missing:
                raise InvalidInputError(
                    f"feature set {s.feature_set_id} covers {n_all} labelled images but only {len(common)} are "
                    "common to all compared sets: pass --allow-missing to compare on the common images"
                )
        params = {"feature_sets": feature_set, "layers": layer, **_params(specs[0])}
        with start_run(st, "compare", params) as run:
            chosen = []
            for s in specs:
                outs = run_experiment(st, s, run.run_id, only_hashes=common, show_progress=output is Output.text)
                chosen.append((s.feature_set_id, best_layer(outs)))
            rows = compare_probes(run.run_id, specs[0].task, chosen, n_boot=n_boot, seed=seed)
            st.append("probe_comparisons", rows)
            run.summary.update({"n_comparisons": len(rows), "n_test": len(chosen[0][1].test_hashes)})
        if output is Output.json:
            doc = {
                "run_id": run.run_id,
                "kind": "compare",
                "task": specs[0].task.task,
                "reference": chosen[0][0],
                "test": _test_json(chosen[0][1].metrics),
                "feature_sets": [
                    {"feature_set_id": fs, "layer": o.layer, "probe_id": o.probe_id, "test": _test_json(o.metrics)}
                    for fs, o in chosen
                ],
                "comparisons": [r.model_dump(exclude={"created_at"}) for r in rows],
            }
            typer.echo(json.dumps(doc, default=float))
            return
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

    @app.command()
    def report(
        run_ids: Annotated[list[str], typer.Argument(help="Run ids of train/sweep/compare runs.")],
        out: Annotated[str, typer.Option("--out", help="Folder for the PNGs and summary.md.")] = "medprobe-report",
        store: StoreOption = None,
    ) -> None:
        """PNG plots (layer curves, ROC, label efficiency, comparisons) and a Markdown summary of runs."""
        from medprobe.trainer.report import write_report

        paths = write_report(open_store(store), run_ids, out)
        for p in paths:
            console.print(str(p))
