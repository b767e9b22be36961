"""Commands that bring images in: ``medprobe ingest`` and ``medprobe datasets``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from medprobe.cli.common import console
from medprobe.cli.options import DatasetOpt, Output, ProgressOutput, with_group
from medprobe.schemas.vocab import Layout, NeoplasticShare, Verify
from medprobe.workflows import ingesting as wf

if TYPE_CHECKING:
    from medprobe.workflows.ingesting import DatasetOverview, IngestSummary

TaskNameOpt = Annotated[
    str | None, typer.Option("--task", "-t", help="Task name of single-task layouts (default: label; e.g. tissue)")
]


def _summary_tables(summary: IngestSummary) -> None:
    images = Table(title=f"ingest {summary.dataset} ({summary.format})", show_header=False)
    images.add_column("what")
    images.add_column("n", justify="right")
    rows = [
        ("records in source", summary.records),
        ("new images", summary.images_new),
        ("images already in the store", summary.images_reused),
        ("duplicates in source (kept once)", summary.duplicates),
        ("already in this dataset", summary.already_in_dataset),
        ("labels corrected (the new ones now count)", summary.labels_changed),
        ("members retired (their file changed)", summary.retired),
        ("members retired (no longer in the source)", summary.removed),
        ("members now from this source (were from another)", summary.moved),
        ("members with changed metadata", summary.metadata_changed),
        ("images re-pointed (their old file is gone)", summary.repointed),
        ("conflicting duplicate rows (first kept)", summary.conflicts),
        ("new dataset memberships", summary.memberships_new),
        ("failures", summary.failures),
    ]
    rows += [(f"  excluded: {k}", v) for k, v in summary.excluded.items()]
    rows += [(f"  note: {k}", v) for k, v in summary.notes.items()]
    for what, n in rows:
        images.add_row(what, f"{n:,}")
    images.caption = (
        f"split policy: {summary.split_policy}; read {summary.bytes_read / 1e6:,.1f} MB at "
        f"{summary.files_per_s:,.0f} files/s, {summary.mb_per_s:,.1f} MB/s; {summary.seconds:.1f} s in all"
    )
    console.print(images)
    for task in sorted({t for per_task in summary.label_counts.values() for t in per_task}):
        classes = sorted(
            {c for per_task in summary.label_counts.values() for c in per_task.get(task, {})},
        )
        t = Table(title=f"labels: {task}")
        t.add_column("split")
        for c in classes:
            t.add_column(c, justify="right")
        for split, per_task in summary.label_counts.items():
            counts = per_task.get(task, {})
            t.add_row(split, *(f"{counts.get(c, 0):,}" for c in classes))
        console.print(t)
    for task, dropped in summary.dropped_findings.items():
        console.print(
            f"{task}: dropped {len(dropped)} finding(s) with too few training positives: {', '.join(dropped)}"
        )
    if summary.groups_across_splits:
        first = next(iter(summary.groups_across_splits.items()))
        console.print(
            f"[yellow]warning:[/] {len(summary.groups_across_splits)} patient group(s) are in more than one split "
            f"(e.g. {first[0]}: {', '.join(first[1])}): the shipped split leaks patients; `train` refuses such a "
            "train/test overlap unless --allow-group-overlap",
            highlight=False,
        )
    if summary.failures:
        by = ", ".join(f"{k} {v}" for k, v in summary.failures_by_reason.items())
        console.print(
            f"[yellow]{summary.failures} failure(s)[/] ({by}); see them with: medprobe sql "
            f"\"SELECT path, reason, error FROM failures WHERE dataset = '{summary.dataset}'\"",
            highlight=False,
        )
    else:
        console.print("0 failures")


@with_group(ProgressOutput, "output")
def ingest(
    output: ProgressOutput,
    source: Annotated[str, typer.Argument(help="Folder, manifest or .npz to ingest.")],
    dataset: DatasetOpt,
    layout: Annotated[Layout | None, typer.Option("--layout", help="The source's published layout (required).")] = None,
    path_column: Annotated[str | None, typer.Option(help="csv: column with image paths (default: path)")] = None,
    label_column: Annotated[
        list[str] | None, typer.Option(help="csv: label column(s), one task each (comma list or repeated)")
    ] = None,
    metadata_column: Annotated[
        list[str] | None,
        typer.Option(help="csv: columns kept as per-image metadata, e.g. age,sex,site (comma list or repeated)"),
    ] = None,
    split_column: Annotated[str | None, typer.Option(help="csv: column with train/val/test")] = None,
    group_column: Annotated[str | None, typer.Option(help="csv: patient/lesion column (grouped splits)")] = None,
    root: Annotated[str | None, typer.Option(help="csv: base folder of relative paths (default: CSV's)")] = None,
    task: TaskNameOpt = None,
    task_type: Annotated[
        list[str] | None, typer.Option(help="TASK=binary|multiclass|ordinal|multilabel (comma list or repeated)")
    ] = None,
    metric: Annotated[list[str] | None, typer.Option(help="TASK=macro_f1|macro_auc (comma list or repeated)")] = None,
    class_names: Annotated[list[str] | None, typer.Option(help="Class names in label-index order (comma list)")] = None,
    separator: Annotated[str | None, typer.Option(help="csv multilabel cells: separator (default: |)")] = None,
    fold_splits: Annotated[
        list[str] | None, typer.Option(help="pannuke: FOLD=SPLIT pairs (default: 1=train,2=val,3=test)")
    ] = None,
    neoplastic_share: Annotated[
        NeoplasticShare, typer.Option(help="pannuke: the 30% share of nuclei by area or count")
    ] = NeoplasticShare.area,
    test_fraction: Annotated[float, typer.Option(help="Generated splits: test share of all data")] = 0.2,
    val_fraction: Annotated[float, typer.Option(help="Val share carved from training data (0: none)")] = 0.1,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of generated splits")] = 0,
    min_positives: Annotated[int, typer.Option(help="Multilabel: drop findings with fewer training positives")] = 50,
    copy: Annotated[bool, typer.Option("--copy", help="Copy image bytes into the store")] = False,
    verify: Annotated[Verify, typer.Option(help="How hard each image is checked")] = Verify.structure,
    max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels (decompression bombs)")] = 89_478_485,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Hashing threads (default: CPU count)")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero when any file fails")] = False,
) -> None:
    """Ingest a collection: images by sha256, labels, tasks, splits; unreadable files become failures.

    A re-ingest makes the dataset's members from this source equal to it: members it no longer holds (or holds
    only unreadable) are retired, a moved folder is re-pointed; members from other sources are kept."""
    options = {k: v for k, v in locals().items() if k != "output"}
    output.check()
    failed: wf.IngestFailuresError | None = None
    try:
        result = wf.ingest(**options, no_progress=output.quiet, store=output.store)
    except wf.IngestFailuresError as e:  # --strict: show what was ingested, then fail
        result, failed = e.result, e
    output.render(result, show=lambda: _summary_tables(result.summary))
    if failed is not None:
        raise failed


@with_group(Output, "output")
def datasets(
    output: Output,
    dataset: Annotated[str | None, typer.Argument(help="Show only this dataset")] = None,
) -> None:
    """List datasets: tasks, split sizes and class counts per split."""
    result = wf.datasets(dataset=dataset, store=output.store)
    output.emit(rows=result.datasets, document=result.datasets, show=lambda: _print_overviews(result.overviews))


def register(app: typer.Typer) -> None:
    """Add ingest and datasets."""
    app.command("ingest")(ingest)
    app.command("datasets")(datasets)


def _print_overviews(overviews: list[DatasetOverview]) -> None:
    if not overviews:
        console.print("no datasets yet; add one with `medprobe ingest SOURCE --layout L --dataset NAME`")
        return
    t = Table(title="datasets")
    for col in ("dataset", "format", "images", "train", "val", "test", "groups", "tasks", "split policy"):
        t.add_column(col, justify="right" if col in ("images", "train", "val", "test", "groups") else "left")
    for ov in overviews:
        tasks = "; ".join(
            f"{x['task']} ({x['type']}, {len(x['class_names'])}, {x['primary_metric']})" for x in ov.tasks
        )
        t.add_row(
            ov.dataset,
            ov.format,
            f"{sum(ov.split_sizes.values()):,}",
            *(f"{ov.split_sizes.get(sp, 0):,}" for sp in ("train", "val", "test")),
            f"{ov.groups:,}",
            tasks,
            ov.split_policy,
        )
    console.print(t)
    for ov in overviews:
        for task in ov.tasks:
            name = task["task"]
            per_split = ov.class_counts.get(name, {})
            ct = Table(title=f"{ov.dataset} / {name} ({task['type']})")
            ct.add_column("class")
            splits = list(per_split)
            for sp in splits:
                ct.add_column(sp, justify="right")
            for c in task["class_names"]:
                ct.add_row(c, *(f"{per_split[sp].get(c, 0):,}" for sp in splits))
            console.print(ct)
