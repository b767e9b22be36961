"""DuckDB views over the store's Parquet tables, and the read-only SQL entry point."""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from duckdb.sqltypes import BIGINT, BOOLEAN, VARCHAR

from medprobe.errors import InvalidInputError, ReadOnlySQLError
from medprobe.featurestore.fragments import list_fragments, txn_marker, txn_of
from medprobe.featurestore.fsio import Location
from medprobe.featurestore.processes import process_gone
from medprobe.schemas import TABLES, TableSpec

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# EXPLAIN ANALYZE runs the statement it explains: check that one too
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_DUCK_TYPES = {pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR", pa.int8(): "TINYINT", pa.int16(): "SMALLINT",
               pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE"}  # fmt: skip


def _duck_type(t: pa.DataType) -> str:
    """The DuckDB type of an Arrow type a newer schema may add (NULL-filled in older fragments)."""
    if t in _DUCK_TYPES:
        return _DUCK_TYPES[t]
    if pa.types.is_timestamp(t):
        return "TIMESTAMP WITH TIME ZONE" if t.tz else "TIMESTAMP"
    if pa.types.is_list(t):
        return f"{_duck_type(t.value_type)}[]"
    raise TypeError(f"no DuckDB type for {t}")


def _absent_value(spec: TableSpec, column: pa.Field) -> str:
    """What a column newer than every fragment reads as: the row model's plain default (e.g. method = 'probe'),
    else NULL."""
    field = spec.model.model_fields.get(column.name)
    default = None if field is None or field.default_factory is not None else field.default
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, (int, float)):
        return f"CAST({default!r} AS {_duck_type(column.type)})"
    if isinstance(default, str):
        return _quote(default)
    return f"CAST(NULL AS {_duck_type(column.type)})"


def _dedup_view_sql(spec: TableSpec) -> str:
    """SELECT exactly one row per key, chosen by ``spec.order`` and then every other column."""
    raw = _ident(f"raw_{spec.name}")
    if not spec.key:
        return f"SELECT * FROM {raw}"
    visible = f" AND ({spec.visible})" if spec.visible else ""
    ordered = [o if " " in o else f"{_ident(o)} ASC" for o in spec.order]
    used = {o.split()[0] for o in spec.order} | set(spec.key)
    tiebreak = [f"{_ident(f.name)} ASC" for f in spec.schema if f.name not in used and not pa.types.is_list(f.type)]
    order_by = ", ".join(ordered + tiebreak) or "1"
    partition = ", ".join(_ident(k) for k in spec.key)
    shown = f" REPLACE ({spec.shown})" if spec.shown else ""
    return (
        f"SELECT * EXCLUDE (_medprobe_rank){shown} FROM (SELECT *, row_number() OVER "
        f"(PARTITION BY {partition} ORDER BY {order_by}) AS _medprobe_rank FROM {raw}) "
        f"WHERE _medprobe_rank = 1{visible}"
    )


def _family(t: pa.DataType) -> str:
    """The kind of values an Arrow type holds (widths, time zones' spelling and list field names aside)."""
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_family(t.value_type)}>"
    for kind, test in (("int", pa.types.is_integer), ("float", pa.types.is_floating), ("bool", pa.types.is_boolean),
                       ("str", lambda x: pa.types.is_string(x) or pa.types.is_large_string(x)),
                       ("time", pa.types.is_timestamp), ("bytes", pa.types.is_binary)):  # fmt: skip
        if test(t):
            return kind
    return str(t)


def _check_schema(schema: pa.Schema, spec: TableSpec) -> None:
    """ValueError unless a fragment holds the table's required columns, and only columns of the table, each holding
    the kind of values the table's does (a fragment of an older format may lack the columns a newer one added)."""
    for field in schema:
        index = spec.schema.get_field_index(field.name)
        if index < 0:
            raise ValueError(f"not a {spec.name} fragment: it has a column {field.name!r} the table does not")
        want = spec.schema.field(index).type
        if not pa.types.is_null(field.type) and _family(field.type) != _family(want):  # an all-NULL column fits any
            raise ValueError(f"not a {spec.name} fragment: column {field.name!r} is {field.type}, not {want}")
    fields = spec.model.model_fields
    required = [n for n in spec.schema.names if n in fields and fields[n].is_required() and n not in schema.names]
    if required:
        raise ValueError(f"not a {spec.name} fragment: it lacks the column(s) {required}")


class Catalog:
    """One DuckDB connection with a ``raw_<table>`` and a deduplicated ``<table>`` view per table.

    Fragments are immutable, so a view only needs rebuilding when its fragment list changes.
    """

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        self.con = duckdb.connect(":memory:")
        self.lock = threading.RLock()
        if not loc.is_local:
            self.con.register_filesystem(loc.fs)
        # user SQL reads the store and nothing else: no read_text('/etc/passwd'), read_csv, glob or ATTACH of
        # paths outside it (a shared store's users must not read each other's files through it)
        root = loc.full_url(loc.path()).rstrip("/") + "/"
        # DuckDB may always read its temp directory (default: ./.tmp of the working directory, anyone's files):
        # give it a private, empty one of its own
        self._spill = tempfile.TemporaryDirectory(prefix="medprobe-duckdb-")
        self.con.execute(f"SET temp_directory = {_quote(self._spill.name)}")
        # the runs view shows a run whose process is gone as abandoned, as `status` and `report` do
        self.con.create_function("medprobe_process_gone", process_gone, [VARCHAR, BIGINT], BOOLEAN)
        self.con.execute(f"SET allowed_directories = [{_quote(root)}]")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")
        self._files: dict[str, tuple[str, ...] | None] = dict.fromkeys(TABLES)
        self._columns: dict[str, frozenset[str]] = {}  # fragment -> its columns (fragments are immutable)
        self.unreadable: dict[str, str] = {}  # fragment path -> why it is left out of every view
        self._committed: set[str] = set()  # transactions seen committed (a commit is never undone)
        self.superseded: dict[str, set[str]] = {}  # table -> fragment names a committed compaction replaced
        self.superseded_by: dict[str, str] = {}  # fragment name -> the compaction transaction that replaced it
        for spec in TABLES.values():
            self.con.register(f"_empty_{spec.name}", spec.schema.empty_table())
        self.refresh()

    def fragment_files(self, table: str) -> tuple[str, ...]:
        """The fragment paths the current view of ``table`` reads."""
        files = self._files[table]
        return files or ()

    def refresh(self, tables: Sequence[str] | None = None) -> None:
        """Re-list fragments and rebuild the views whose fragment list changed."""
        with self.lock:
            for name in tables or TABLES:
                spec = TABLES[name]
                files = self._visible(name, self._readable((e["name"] for e in list_fragments(self.loc, name)), spec))
                if files == self._files[name]:
                    continue
                raw = _ident(f"raw_{name}")
                source = f"({self.fragments_sql(spec, files)})" if files else _ident(f"_empty_{name}")
                self.con.execute(f"CREATE OR REPLACE VIEW {raw} AS SELECT * FROM {source}")
                self.con.execute(f"CREATE OR REPLACE VIEW {_ident(name)} AS {_dedup_view_sql(spec)}")
                self._files[name] = files

    def fragments_sql(self, spec: TableSpec, files: Sequence[str]) -> str:
        """A ``SELECT`` of every row of ``files`` (readable fragments of ``spec``'s table) in the table's schema."""
        return " UNION ALL ".join(self._group_sql(spec, group) for group in self._groups(files))

    def _groups(self, files: Sequence[str]) -> list[list[str]]:
        """Fragments grouped by their column set (one group unless the format changed): DuckDB then reads one
        footer per group to bind the view, not every file's (``union_by_name`` would read all of them, which made
        each append cost time linear in the fragment count)."""
        groups: dict[frozenset[str], list[str]] = {}
        for f in files:
            groups.setdefault(self._columns[f], []).append(f)
        return list(groups.values())

    def _group_sql(self, spec: TableSpec, files: Sequence[str]) -> str:
        """``SELECT`` of the table's columns from fragments that share one column set; a column they lack (written
        before a format added it) reads as the row model's default, else NULL."""
        present = self._columns[files[0]]
        cols = ", ".join(
            _ident(c.name) if c.name in present else f"{_absent_value(spec, c)} AS {_ident(c.name)}"
            for c in spec.schema
        )
        urls = ", ".join(_quote(self.loc.full_url(f)) for f in files)
        return f"SELECT {cols} FROM read_parquet([{urls}])"

    def _note_supersedes(self, txid: str, marker: bytes) -> None:
        """A compaction's commit marker names the fragments its new fragment replaces: from now on they are hidden."""
        try:
            body = json.loads(marker)
        except ValueError:
            return
        for table, names in (body.get("supersedes") or {}).items():
            self.superseded.setdefault(table, set()).update(names)
            self.superseded_by.update(dict.fromkeys(names, txid))

    def _visible(self, table: str, files: tuple[str, ...]) -> tuple[str, ...]:
        hidden = self.superseded.get(table)
        return tuple(f for f in files if posixpath.basename(f) not in hidden) if hidden else files

    def _readable(self, paths: Iterable[str], spec: TableSpec) -> tuple[str, ...]:
        """The fragments whose Parquet footer reads and whose columns are the table's (by name and type; a column a
        newer format added may be absent); the others go to ``unreadable`` and stay out of the views (``medprobe
        store verify`` names them, ``medprobe store quarantine`` moves them aside): one foreign or wrongly typed
        file never breaks the table."""
        out = []
        pending: set[str] = set()  # transactions found uncommitted in this pass: one marker check each
        for path in paths:
            txid = txn_of(path)
            if txid is not None and txid not in self._committed:
                if txid in pending:
                    continue
                try:
                    body = self.loc.fs.cat_file(txn_marker(self.loc, txid))
                except FileNotFoundError:
                    pending.add(txid)
                    continue  # written by a transaction that has not committed (or never will): invisible
                self._committed.add(txid)
                self._note_supersedes(txid, body)
            if path not in self._columns:
                try:
                    with self.loc.fs.open(path, "rb") as f:
                        schema = pq.read_metadata(f).schema.to_arrow_schema()
                    columns = frozenset(schema.names)
                    _check_schema(schema, spec)
                except FileNotFoundError:
                    continue  # moved aside since it was listed
                except (OSError, ValueError) as e:
                    self.unreadable[path] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    continue
                self._columns[path] = columns
                self.unreadable.pop(path, None)
            out.append(path)
        return tuple(out)

    def scan_activations(self, feature_set_id: str, layers: Sequence[int]) -> pa.Table:
        """Raw manifest rows ``(layer, image_hash, segment_id, row)`` of a feature set and ``layers``, in no set order.

        Reads the current fragment files directly: every activations fragment has the one schema, and without the
        view's ``union_by_name`` DuckDB pushes the filter and the projection into the Parquet scan (half the time).
        """
        layers = sorted({int(x) for x in layers})
        with self.lock:
            files = self._files["activations"]
            if not files or not layers:
                return pa.table(
                    {
                        "layer": pa.array([], pa.int32()),
                        "image_hash": pa.array([], pa.string()),
                        "segment_id": pa.array([], pa.string()),
                        "row": pa.array([], pa.int32()),
                    }
                )
            urls = ", ".join(_quote(self.loc.full_url(f)) for f in files)
            in_layers = ", ".join(str(x) for x in layers)  # integers: safe to inline, lets DuckDB prune
            return self._run(
                f"SELECT layer, image_hash, segment_id, row FROM read_parquet([{urls}]) "
                f"WHERE feature_set_id = ? AND layer IN ({in_layers})",
                [feature_set_id],
            )

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> pa.Table:
        """Run trusted SQL (the store's own queries) and return an Arrow table."""
        with self.lock:
            return self._run(sql, params)

    def _run(self, sql: str, params: Sequence[Any] | dict | None) -> pa.Table:
        rel = self.con.sql(sql, params=params or None)
        return rel.to_arrow_table() if rel is not None else pa.table({})

    def check_read_only(self, sql: str) -> None:
        """Raise ReadOnlySQLError unless every statement in ``sql`` only reads."""
        with self.lock:
            try:
                statements = self.con.extract_statements(sql)
            except duckdb.Error as e:
                raise InvalidInputError(f"SQL error: {e}") from e
        if not statements:
            raise InvalidInputError("empty SQL statement")
        for st in statements:
            if st.type == duckdb.StatementType.EXPLAIN:
                inner = _EXPLAIN.sub("", st.query, count=1)
                if inner == st.query or not inner.strip():
                    raise ReadOnlySQLError(
                        f"medprobe sql cannot check this EXPLAIN statement: {st.query.strip()[:60]!r}"
                    )
                self.check_read_only(inner)
                continue
            if st.type not in _ALLOWED:
                kind = str(st.type).rsplit(".", 1)[-1]
                raise ReadOnlySQLError(
                    f"medprobe sql is read-only: a {kind} statement is refused ({st.query.strip()[:60]!r}); "
                    "use SELECT, and --format/--out to save results"
                )

    def read_only_query(self, sql: str, params: Sequence[Any] | dict | None = None) -> pa.Table:
        """Run user SQL after checking it only reads; DuckDB's message on syntax errors."""
        self.check_read_only(sql)
        with self.lock:
            try:
                return self._run(sql, params)
            except duckdb.PermissionException as e:
                raise InvalidInputError(
                    f"medprobe sql reads only the store's tables, not files elsewhere ({str(e).splitlines()[0]})"
                ) from e
            except duckdb.Error as e:
                raise InvalidInputError(f"SQL error: {e}") from e

    def register_temp(self, name: str, data: pa.Table) -> None:
        with self.lock:
            self.con.register(name, data)

    def unregister_temp(self, name: str) -> None:
        with self.lock:
            self.con.unregister(name)

    def close(self) -> None:
        with self.lock:
            self.con.close()
