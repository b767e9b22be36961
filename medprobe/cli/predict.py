"""``medprobe predict``: a stored probe applied to a dataset."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from medprobe.cli.common import console
from medprobe.cli.options import DatasetOpt, Output, SplitOpt, with_group
from medprobe.workflows.common import N_BOOT
from medprobe.workflows.prediction import PredictResult
from medprobe.workflows.prediction import predict as run_predict


def _print(result: PredictResult) -> None:
    console.print(
        f"probe {result.applied_from} (task {result.task}, {result.feature_set_id} layer {result.layer}) on "
        f"{result.dataset}: {result.n_predicted} of {result.n_members} images scored, {result.n_labelled} labelled; "
        f"predictions under {result.probe_id} (run {result.run_id})",
        highlight=False,
    )
    if result.n_missing_features:
        console.print(f"{result.n_missing_features} image(s) have no features yet: run `medprobe extract` to add them")
    if not result.metrics:
        console.print(f"no image has a {result.task!r} label: predictions only")
        return
    table = Table(title="metrics over the labelled images")
    for col in ("metric", "value", "95% CI"):
        table.add_column(col)
    for key, value in result.metric_row().items():
        if key.endswith(("_ci_low", "_ci_high")) or value is None:
            continue
        lo, hi = result.metric_row()[f"{key}_ci_low"], result.metric_row()[f"{key}_ci_high"]
        table.add_row(key, f"{value:.3f}", "-" if lo is None else f"[{lo:.3f}, {hi:.3f}]")
    console.print(table)


@with_group(Output, "output")
def predict(
    output: Output,
    probe: Annotated[str, typer.Option("--probe", help="A probe id of probe_results (a fitted probe).")],
    dataset: DatasetOpt,
    split: SplitOpt = None,
    subgroup: Annotated[
        list[str] | None,
        typer.Option("--subgroup", help="Metadata columns scored per group: sex, age:4 (comma list or repeated)."),
    ] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", min=1, help="Bootstrap replicates for the CIs.")] = N_BOOT,
    boot_seed: Annotated[int, typer.Option("--boot-seed", help="Seed of the bootstrap replicates.")] = 0,
) -> None:
    """Apply a stored probe unchanged to a dataset's images; metrics with CIs where the dataset has its labels."""
    output.check()
    result = run_predict(probe=probe, dataset=dataset, split=split, subgroup=subgroup, n_boot=n_boot,
                         boot_seed=boot_seed, store=output.store)  # fmt: skip
    output.render(result, show=lambda: _print(result))


def register(app: typer.Typer) -> None:
    """Add ``predict``."""
    app.command("predict")(predict)
