"""Rich tables for the ``table`` output format."""

from __future__ import annotations

import pyarrow as pa
from rich.table import Table


def arrow_to_rich(table: pa.Table, title: str | None = None, max_rows: int = 200) -> Table:
    """A rich table of the first ``max_rows`` rows of an Arrow table."""
    out = Table(title=title, show_lines=False)
    for name in table.column_names:
        out.add_column(name, overflow="fold")
    shown = table.slice(0, max_rows)
    for row in zip(*(col.to_pylist() for col in shown.columns), strict=True):  # by position: names may repeat
        out.add_row(*("" if v is None else str(v) for v in row))
    if table.num_rows > max_rows:
        out.caption = f"{max_rows} of {table.num_rows:,} rows shown; use --format/--out for all"
    else:
        out.caption = f"{table.num_rows:,} row{'' if table.num_rows == 1 else 's'}"
    return out


def key_value_table(title: str, items: list[tuple[str, str]]) -> Table:
    """A two-column table without header: what, value (right-aligned)."""
    t = Table(title=title, show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    for what, value in items:
        t.add_row(what, value)
    return t
