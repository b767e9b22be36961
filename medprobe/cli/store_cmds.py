"""Commands over the store itself: store info/verify/gc, sql, export."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Annotated

import pyarrow as pa
import typer
from rich.table import Table

from medprobe.cli.common import console, open_store
from medprobe.cli.options import (
    OptionalDatasetOpt,
    Output,
    ProgressOutput,
    StoreOpt,
    layers_option,
    split_list,
    with_group,
)
from medprobe.cli.tables import arrow_to_rich
from medprobe.errors import CorruptDataError, InvalidInputError
from medprobe.sizes import human_bytes as _human_bytes
from medprobe.workflows import storage as wf


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` -> timedelta."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m:
        raise InvalidInputError(f"cannot read duration {text!r}: use a number and s/m/h/d, e.g. 24h")
    value, unit = float(m.group(1)), m.group(2)
    return dt.timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: value})


@with_group(Output, "output")
def info(output: Output) -> None:
    """Tables, row counts, bytes and feature sets of the store."""
    from medprobe.featurestore import store_info

    rep = store_info(open_store(output.store))

    def show() -> None:
        console.print(f"[bold]store[/] {rep.url}  format version {rep.format_version}")
        t = Table(title="tables")
        for col in ("table", "fragments", "rows", "rows written", "bytes"):
            t.add_column(col, justify="left" if col == "table" else "right")
        for ti in rep.tables:
            t.add_row(ti.name, str(ti.fragments), f"{ti.rows:,}", f"{ti.raw_rows:,}", _human_bytes(ti.bytes))
        t.add_row("[dim]segments (zarr)[/]", str(rep.segments), "", "", _human_bytes(rep.segment_bytes))
        console.print(t)
        if rep.feature_sets:
            console.print(arrow_to_rich(pa.Table.from_pylist(rep.feature_sets), title="feature sets"))
        else:
            console.print("no feature sets yet")

    output.emit(rows=[dataclasses.asdict(t) for t in rep.tables], document=dataclasses.asdict(rep), show=show)


@with_group(ProgressOutput, "output")
def verify(
    output: ProgressOutput,
    quick: Annotated[bool, typer.Option(help="Check structure only, do not read every chunk.")] = False,
) -> None:
    """Check that every manifest row resolves to readable data (chunk checksums included)."""
    from medprobe.featurestore import verify_store
    from medprobe.progress import progress_bar

    s = open_store(output.store)
    with progress_bar("segments", transient=True, disable=output.quiet) as bar:
        task = bar.add_task("verify", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        rep = verify_store(s, read_data=not quick, progress=advance)

    def show() -> None:
        for p in rep.problems:
            console.print(f"[red]problem:[/] {p}", highlight=False, soft_wrap=True)
        console.print(
            f"checked {rep.fragments_checked} fragments, {rep.segments_checked} segments, {rep.indexes_checked} "
            f"search indexes, {rep.rows_checked:,} manifest rows: "
            f"{'OK' if rep.ok else f'{len(rep.problems)} problem(s)'}"
        )

    document = {**dataclasses.asdict(rep), "ok": rep.ok}
    output.emit(rows=[{"problem": p} for p in rep.problems], document=document, show=show)
    if not rep.ok:
        raise CorruptDataError(f"store verify found {len(rep.problems)} problem(s); see above")


@with_group(Output, "output")
def quarantine_cmd(
    output: Output,
    quick: Annotated[bool, typer.Option(help="Check structure only, do not read every chunk.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be moved.")] = False,
) -> None:
    """Move aside what verify finds broken (unreadable fragments; manifests of missing or corrupt segments) into
    <store>/quarantine/, so the rest reads and `extract` redoes the lost rows; restore commit markers that runs
    record as committed. Nothing is deleted."""
    from medprobe.featurestore import quarantine, verify_store

    s = open_store(output.store)
    rep = quarantine(s, verify_store(s, read_data=not quick), dry_run=dry_run)
    verb = "would move" if dry_run else "moved"

    def show() -> None:
        for src, dst in rep.moved:
            console.print(f"{verb} {src} -> {dst}", highlight=False, soft_wrap=True)
        for marker in rep.restored_markers:
            console.print(f"{'would restore' if dry_run else 'restored'} {marker}", highlight=False, soft_wrap=True)
        console.print(
            f"{verb} {len(rep.moved)} file(s); {rep.rows_hidden:,} manifest row(s) whose data was gone are no "
            f"longer visible{' (rerun `medprobe extract` to redo them)' if rep.rows_hidden else ''}"
        )

    rows = [{"from": src, "to": dst} for src, dst in rep.moved]
    doc = {"moved": rows, "restored_markers": rep.restored_markers, "rows_hidden": rep.rows_hidden, "dry_run": dry_run}
    output.emit(rows=rows, document=doc, show=show)


@with_group(Output, "output")
def gc(
    output: Output,
    grace: Annotated[str, typer.Option(help="Only remove uncommitted data older than this.")] = "24h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed.")] = False,
) -> None:
    """Remove uncommitted segments and temp files older than a grace period; committed data is kept."""
    from medprobe.featurestore import gc_store

    s = open_store(output.store)
    rep = gc_store(s, parse_duration(grace), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"

    def show() -> None:
        console.print(
            f"{verb} {len(rep.removed_segments)} uncommitted segment(s), {len(rep.removed_temp_files)} temp "
            f"file(s) and {len(rep.removed_superseded)} fragment(s) replaced by a compaction; kept "
            f"{rep.committed} committed and {rep.kept_recent} recent uncommitted segment(s)"
        )

    document = {**dataclasses.asdict(rep), "dry_run": dry_run}
    rows = [{"kind": "segment", "path": p} for p in rep.removed_segments]
    rows += [{"kind": "temp_file", "path": p} for p in rep.removed_temp_files]
    rows += [{"kind": "superseded_fragment", "path": p} for p in rep.removed_superseded]
    output.emit(rows=rows, document=document, show=show)


@with_group(Output, "output")
def compact(
    output: Output,
    table: Annotated[
        list[str] | None, typer.Option("--table", help="Tables to compact (default: every table).")
    ] = None,
    min_fragments: Annotated[
        int, typer.Option("--min-fragments", min=2, help="Compact a table only when it has this many fragments.")
    ] = 16,
) -> None:
    """Rewrite each table's many small fragments as one, atomically (readers see old or new, never both)."""
    from medprobe.featurestore import compact_table
    from medprobe.schemas import TABLES

    output.check()
    s = open_store(output.store)
    names = split_list(table) or list(TABLES)
    reports = [compact_table(s, name, min_fragments=min_fragments) for name in names]
    rows = [dataclasses.asdict(r) for r in reports]

    def show() -> None:
        t = Table(title="store compact")
        for col in ("table", "fragments before", "after", "rows"):
            t.add_column(col)
        for r in reports:
            t.add_row(r.table, str(r.fragments_before), str(r.fragments_after), str(r.rows))
        console.print(t)
        console.print("replaced fragments stay until `medprobe store gc` (after its grace period)")

    output.emit(rows=rows, document={"tables": rows}, show=show)


@with_group(Output, "output")
def sql(
    output: Output,
    query: Annotated[str, typer.Argument(help="A read-only SQL query (DuckDB dialect) over the store's tables.")],
    max_rows: Annotated[int, typer.Option(help="Rows shown in table format.")] = 200,
) -> None:
    """Run a read-only SQL query over images, dataset_images, feature_sets, activations, runs, ..."""
    result = wf.sql(query=query, max_rows=max_rows, store=output.store).table
    output.emit(rows=result, show=lambda: console.print(arrow_to_rich(result, max_rows=max_rows)))


def export(
    feature_set: Annotated[str, typer.Option("--feature-set", help="Feature set id.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output .npz file.")],
    layers: Annotated[
        str, layers_option("stored layer of the feature set", "-1, the last stored; exactly one layer")
    ] = "-1",
    dataset: OptionalDatasetOpt = None,
    split: Annotated[str | None, typer.Option(help="Only this split of --dataset.")] = None,
    store: StoreOpt = None,
) -> None:
    """Write one layer's rows as X (rows x hidden) and image_hash arrays to an .npz file."""
    res = wf.export(feature_set=feature_set, out=out, layers=layers, dataset=dataset, split=split,
                    store=store)  # fmt: skip
    console.print(f"wrote layer {res.layer}: {res.rows_written:,} rows x {res.hidden} to {out}", highlight=False)
    if res.missing:
        console.print(f"[yellow]{res.missing:,} selected images have no activations for this layer[/]")


def register(app: typer.Typer) -> None:
    """Add store info|verify|quarantine|gc|compact, sql and export."""
    store_app = typer.Typer(help="Inspect, verify and clean the store.", no_args_is_help=True)
    app.add_typer(store_app, name="store")
    store_app.command("info")(info)
    store_app.command("verify")(verify)
    store_app.command("quarantine")(quarantine_cmd)
    store_app.command("gc")(gc)
    store_app.command("compact")(compact)
    app.command("sql")(sql)
    app.command("export")(export)
