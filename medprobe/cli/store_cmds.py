"""Commands over the store itself: store info/verify/gc, sql, export."""

from __future__ import annotations

import datetime as dt
import json
import re
from enum import StrEnum
from typing import Annotated

import pyarrow as pa
import typer
from rich.table import Table

from medprobe.cli.common import StoreOption, console, open_store
from medprobe.errors import CorruptDataError, InvalidInputError


class OutFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` -> timedelta."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m:
        raise InvalidInputError(f"cannot read duration {text!r}: use a number and s/m/h/d, e.g. 24h")
    value, unit = float(m.group(1)), m.group(2)
    return dt.timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: value})


def arrow_to_rich(table: pa.Table, title: str | None = None, max_rows: int = 200) -> Table:
    """A rich table of the first ``max_rows`` rows of an Arrow table."""
    out = Table(title=title, show_lines=False)
    for name in table.column_names:
        out.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        out.add_row(*("" if v is None else str(v) for v in row.values()))
    if table.num_rows > max_rows:
        out.caption = f"{max_rows} of {table.num_rows:,} rows shown; use --format/--out for all"
    else:
        out.caption = f"{table.num_rows:,} row{'' if table.num_rows == 1 else 's'}"
    return out


def write_table(table: pa.Table, fmt: OutFormat, out: str | None) -> None:
    """Write query results as csv/json/parquet to ``out`` (or stdout for csv/json)."""
    import fsspec
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt is OutFormat.parquet:
        if not out:
            raise InvalidInputError("--format parquet needs --out FILE")
        with fsspec.open(out, "wb") as f:
            pq.write_table(table, f)
        return
    if fmt is OutFormat.csv:
        import io

        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        text = buf.getvalue().decode()
    else:
        text = json.dumps(table.to_pylist(), default=str, indent=1)
    if out:
        with fsspec.open(out, "w") as f:
            f.write(text)
    else:
        typer.echo(text, nl=not text.endswith("\n"))


def register(app: typer.Typer) -> None:
    store_app = typer.Typer(help="Inspect, verify and clean the store.", no_args_is_help=True)
    app.add_typer(store_app, name="store")

    @store_app.command("info")
    def info(store: StoreOption = None) -> None:
        """Tables, row counts, bytes and feature sets of the store."""
        from medprobe.featurestore.maintenance import store_info

        s = open_store(store)
        rep = store_info(s)
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

    @store_app.command("verify")
    def verify(
        store: StoreOption = None,
        quick: Annotated[bool, typer.Option(help="Check structure only, do not read every chunk.")] = False,
    ) -> None:
        """Check that every manifest row resolves to readable data (chunk checksums included)."""
        from medprobe.featurestore.maintenance import verify_store
        from medprobe.progress import progress_bar

        s = open_store(store, create=False)
        with progress_bar("segments", transient=True) as bar:
            task = bar.add_task("verify", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            rep = verify_store(s, read_data=not quick, progress=advance)
        for p in rep.problems:
            console.print(f"[red]problem:[/] {p}", highlight=False)
        console.print(
            f"checked {rep.fragments_checked} fragments, {rep.segments_checked} segments, "
            f"{rep.rows_checked:,} manifest rows: {'OK' if rep.ok else f'{len(rep.problems)} problem(s)'}"
        )
        if not rep.ok:
            raise CorruptDataError(f"store verify found {len(rep.problems)} problem(s); see above")

    @store_app.command("gc")
    def gc(
        store: StoreOption = None,
        grace: Annotated[str, typer.Option(help="Only remove uncommitted data older than this.")] = "24h",
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed.")] = False,
    ) -> None:
        """Remove uncommitted segments and temp files older than a grace period; committed data is kept."""
        from medprobe.featurestore.maintenance import gc_store

        s = open_store(store, create=False)
        rep = gc_store(s, parse_duration(grace), dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        console.print(
            f"{verb} {len(rep.removed_segments)} uncommitted segment(s) and {len(rep.removed_temp_files)} temp "
            f"file(s); kept {rep.committed} committed and {rep.kept_recent} recent uncommitted segment(s)"
        )

    @app.command("sql")
    def sql(
        query: Annotated[str, typer.Argument(help="A read-only SQL query (DuckDB dialect) over the store's tables.")],
        store: StoreOption = None,
        fmt: Annotated[OutFormat, typer.Option("--format", "-f", help="Output format.")] = OutFormat.table,
        out: Annotated[str | None, typer.Option("--out", "-o", help="Write results to this file.")] = None,
        max_rows: Annotated[int, typer.Option(help="Rows shown in table format.")] = 200,
    ) -> None:
        """Run a read-only SQL query over images, dataset_images, feature_sets, activations, runs, ..."""
        s = open_store(store, create=False)
        result = s.sql(query)
        if fmt is OutFormat.table and out is None:
            console.print(arrow_to_rich(result, max_rows=max_rows))
        else:
            write_table(result, OutFormat.csv if fmt is OutFormat.table else fmt, out)

    @app.command("export")
    def export(
        feature_set: Annotated[str, typer.Option("--feature-set", help="Feature set id.")],
        layer: Annotated[int, typer.Option("--layer", help="Layer index (non-negative, as stored).")],
        out: Annotated[str, typer.Option("--out", help="Output .npz file.")],
        dataset: Annotated[str | None, typer.Option(help="Only images of this dataset.")] = None,
        split: Annotated[str | None, typer.Option(help="Only this split of --dataset.")] = None,
        store: StoreOption = None,
    ) -> None:
        """Write one layer's rows as X (rows x hidden) and image_hash arrays to an .npz file."""
        from medprobe.featurestore.export import export_npz

        s = open_store(store, create=False)
        res = export_npz(s, feature_set, layer, out, dataset=dataset, split=split)
        console.print(f"wrote {res.rows:,} rows x {res.hidden} to {out}", highlight=False)
        if res.missing:
            console.print(f"[yellow]{res.missing:,} selected images have no activations for this layer[/]")
