"""Tables as folders of immutable Parquet fragments: append one, list the visible ones."""

from __future__ import annotations

import io
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq

from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.featurestore.fsio import Location, list_files, write_atomic
from medprobe.featurestore.ids import new_id
from medprobe.schemas import TABLES, Row, rows_to_table

TABLES_DIR = "tables"
TXNS_DIR = "txns"  # one commit marker per committed transaction: txns/<txid>.json
TXN_PREFIX = "tx-"  # fragments written inside a transaction: tx-<txid>--<id>.parquet, visible once it commits
# rows per Parquet row group: DuckDB scans a file's row groups in parallel and skips those whose statistics miss
# the filter (a segment's manifest rows are stored layer by layer); 32k rows scans 100,000 rows in 10 ms, not 25
ROW_GROUP_ROWS = 32 * 1024


def table_dir(loc: Location, table: str) -> str:
    return loc.path(TABLES_DIR, table)


def to_arrow(table: str, rows: list[Row] | pa.Table) -> pa.Table:
    """Rows (pydantic models or an Arrow table) as an Arrow table of the table's schema."""
    if table not in TABLES:
        raise NotFoundError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    spec = TABLES[table]
    schema = spec.schema
    if isinstance(rows, pa.Table):
        fields = spec.model.model_fields
        # a column the row model gives a plain default (added by a newer format, e.g. retired=False) may be left out
        defaults = {
            name: fields[name].default
            for name in schema.names
            if name not in rows.column_names and name in fields and fields[name].default_factory is None
            and not fields[name].is_required()
        }  # fmt: skip
        for name, value in defaults.items():
            rows = rows.append_column(name, pa.array([value] * rows.num_rows, schema.field(name).type))
        missing = [f.name for f in schema if f.name not in rows.column_names]
        extra = [c for c in rows.column_names if schema.get_field_index(c) < 0]
        if missing or extra:
            raise InvalidInputError(f"table {table!r}: missing columns {missing}, unknown columns {extra}")
        return rows.select(schema.names).cast(schema)
    return rows_to_table(table, list(rows))


def append_fragment(loc: Location, table: str, data: pa.Table, name: str | None = None) -> str:
    """Write ``data`` as one new fragment of ``table``, atomically; returns the fragment path.

    ``name`` (without extension) makes the fragment's identity explicit, e.g. the segment id
    for a segment's manifest rows; by default a new time-ordered id.
    """
    buf = io.BytesIO()
    pq.write_table(data, buf, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    path = posixpath.join(table_dir(loc, table), f"{name or new_id()}.parquet")
    write_atomic(loc, path, buf.getvalue())
    return path


def txn_of(name: str) -> str | None:
    """The transaction a fragment was written in, or None for a fragment visible on its own."""
    base = posixpath.basename(name)
    if not base.startswith(TXN_PREFIX) or "--" not in base:
        return None
    return base[len(TXN_PREFIX) :].split("--", 1)[0]


def txn_marker(loc: Location, txid: str) -> str:
    """The path of a transaction's commit marker."""
    return loc.path(TXNS_DIR, f"{txid}.json")


def is_fragment(name: str) -> bool:
    """Visible fragments end in .parquet; temporary files start with a dot."""
    base = posixpath.basename(name)
    return base.endswith(".parquet") and not base.startswith((".", "_"))


def list_fragments(loc: Location, table: str) -> list[dict]:
    """Visible fragments of ``table`` (dicts with name and size), sorted by name."""
    entries = list_files(loc, table_dir(loc, table))
    return sorted((e for e in entries if e.get("type") == "file" and is_fragment(e["name"])), key=lambda e: e["name"])
