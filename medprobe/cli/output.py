"""One way to print results: ``--format table|csv|json|parquet`` and ``--out FILE`` for every command.

``table`` renders for a person (rich); ``csv``/``json`` go to stdout or ``--out``; ``parquet`` needs ``--out``.
``--out FILE`` without ``--format`` takes the format from the file's suffix. CSV writes list, struct and map
cells as JSON text; JSON is strict (NaN and infinities become ``null``, bytes hex, times ISO 8601) and a repeated
column name gets a suffix instead of silently overwriting its twin.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import PurePath
from typing import Any

import pyarrow as pa
import typer

from medprobe.cli.common import err_console
from medprobe.errors import InvalidInputError
from medprobe.workflows.results import as_table, jsonable


class OutFormat(StrEnum):
    """What ``--format`` chooses."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


FORMATS: tuple[str, ...] = tuple(f.value for f in OutFormat)
_SUFFIXES = {".csv": OutFormat.csv, ".json": OutFormat.json, ".parquet": OutFormat.parquet, ".pq": OutFormat.parquet}


def resolve_format(fmt: OutFormat | str | None, out: str | None) -> OutFormat:
    """The output format: ``--format`` if given, else from ``--out``'s suffix, else ``table``."""
    named = None if out is None else out.strip().lower()
    if named in (*FORMATS, "text"):  # the old `-o json` / `--output text`
        suggest = "table" if named == "text" else named
        raise InvalidInputError(f"-o/--out names the file to write, not a format; use -f/--format {suggest}")
    if fmt is not None:
        try:
            return OutFormat(str(fmt).lower())
        except ValueError:
            raise InvalidInputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}") from None
    if out is None:
        return OutFormat.table
    suffix = PurePath(out).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidInputError(
            f"--out {out}: cannot tell the format from the suffix {suffix or '(none)'}; "
            "add -f/--format csv|json|parquet"
        )
    return _SUFFIXES[suffix]


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` (see :func:`jsonable`)."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False, ensure_ascii=False)


def unique_names(names: Sequence[str]) -> list[str]:
    """Column names made unique: a repeated ``x`` becomes ``x_2``, ``x_3``, ... (never an existing name)."""
    taken = set(names)
    used: set[str] = set()
    out: list[str] = []
    for name in names:
        new, k = name, 1
        while new in used or (new != name and new in taken):
            k += 1
            new = f"{name}_{k}"
        used.add(new)
        out.append(new)
    return out


def _is_nested(t: pa.DataType) -> bool:
    return bool(pa.types.is_nested(t) or (pa.types.is_dictionary(t) and _is_nested(t.value_type)))


def flatten_for_csv(table: pa.Table) -> pa.Table:
    """Nested columns (list, struct, map) as JSON text, so CSV can hold them; other columns unchanged."""
    cols = []
    for col in table.columns:
        if _is_nested(col.type):
            col = pa.array([None if v is None else dumps(v) for v in col.to_pylist()], pa.string())
        elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            col = pa.array([None if v is None else v.hex() for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def _renamed(table: pa.Table) -> pa.Table:
    names = unique_names(table.column_names)
    if names != table.column_names:
        twins = sorted({n for n in table.column_names if table.column_names.count(n) > 1})
        err_console.print(f"[yellow]note:[/] repeated column name(s) {', '.join(twins)} written as {', '.join(names)}")
        return table.rename_columns(names)
    return table


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def table_text(table: pa.Table, fmt: OutFormat) -> str:
    """CSV or JSON (an array of row objects) text of an Arrow table."""
    if fmt is OutFormat.csv:
        # quote only the cells that need it (commas, quotes, newlines): ids and numbers stay shell-friendly
        flat = flatten_for_csv(table)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(flat.column_names)
        for row in zip(*(col.to_pylist() for col in flat.columns), strict=True):
            writer.writerow(["" if v is None else _csv_cell(v) for v in row])
        return buf.getvalue()
    table = _renamed(table)
    return dumps(table.to_pylist(), indent=1) + "\n"


def _write(out: str | None, text: str) -> None:
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    import fsspec

    with fsspec.open(out, "w", encoding="utf-8") as f:
        f.write(text)


def emit(
    fmt: OutFormat | str | None,
    out: str | None,
    *,
    rows: pa.Table | Sequence[Mapping[str, Any]],
    document: Any = None,
    show: Callable[[], None] | None = None,
) -> None:
    """Print or write a command's result in the chosen format.

    ``rows`` is the result as a table (CSV, Parquet, and JSON unless ``document`` is given); ``document`` is the
    command's JSON object when it has a richer shape than rows; ``show`` renders the ``table`` format (default: a
    rich table of ``rows``).
    """
    chosen = resolve_format(fmt, out)
    if chosen is OutFormat.table:
        if out is not None:  # -f table -o FILE
            raise InvalidInputError("--format table prints to the terminal; choose csv, json or parquet for --out")
        if show is not None:
            show()
        else:
            from medprobe.cli.common import console
            from medprobe.cli.tables import arrow_to_rich

            console.print(arrow_to_rich(as_table(rows)))
        return
    if chosen is OutFormat.json and document is not None:
        _write(out, dumps(document, indent=1) + "\n")
        return
    table = as_table(rows)
    if chosen is OutFormat.parquet:
        if out is None:
            raise InvalidInputError("--format parquet writes a file: add -o/--out FILE.parquet")
        import fsspec
        import pyarrow.parquet as pq

        with fsspec.open(out, "wb") as f:
            pq.write_table(_renamed(table), f)
        return
    _write(out, table_text(table, chosen))


def wants_progress(fmt: OutFormat | str | None, out: str | None) -> bool:
    """Progress bars only when a person reads the terminal (table output); machine output stays clean."""
    return resolve_format(fmt, out) is OutFormat.table
