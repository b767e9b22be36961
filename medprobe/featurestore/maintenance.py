"""Store upkeep: what is in it (info), whether it all reads back (verify), and clean-up (gc)."""

from __future__ import annotations

import datetime as dt
import io
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medprobe.errors import CorruptDataError, InvalidInputError
from medprobe.featurestore.fragments import list_fragments, table_dir, txn_marker, txn_of
from medprobe.featurestore.fsio import list_files, write_atomic
from medprobe.featurestore.ids import id_time
from medprobe.featurestore.segments import SEGMENTS_DIR, layer_array_name, list_segment_dirs, segment_path
from medprobe.featurestore.store import FeatureStore
from medprobe.schemas import TABLES, utcnow


@dataclass
class TableInfo:
    name: str
    fragments: int
    rows: int  # visible (deduplicated) rows
    raw_rows: int
    bytes: int


@dataclass
class StoreInfo:
    url: str
    format_version: int
    tables: list[TableInfo]
    segments: int
    segment_bytes: int
    feature_sets: list[dict]


def _tree_bytes(store: FeatureStore, path: str) -> int:
    try:
        return int(sum(store.loc.fs.du(path, total=False).values()))
    except FileNotFoundError:
        return 0


def store_info(store: FeatureStore) -> StoreInfo:
    """Tables with fragment/row counts and bytes, segments, and feature sets with their layers."""
    store.refresh()
    tables = []
    for name in TABLES:
        frags = list_fragments(store.loc, name)
        counts = store.catalog.query(f'SELECT (SELECT count(*) FROM "{name}") AS n, count(*) AS raw FROM "raw_{name}"')
        tables.append(
            TableInfo(
                name=name,
                fragments=len(frags),
                rows=int(counts.column("n")[0].as_py()),
                raw_rows=int(counts.column("raw")[0].as_py()),
                bytes=int(sum(int(f.get("size") or 0) for f in frags)),
            )
        )
    fsets = store.catalog.query(
        """
        SELECT f.feature_set_id, f.model_id, f.pooling, f.prompt, f.storage_dtype,
               count(DISTINCT a.layer) AS layers, count(DISTINCT a.image_hash) AS images
        FROM feature_sets f LEFT JOIN activations a USING (feature_set_id)
        GROUP BY ALL ORDER BY f.feature_set_id
        """
    ).to_pylist()
    return StoreInfo(
        url=store.url,
        format_version=int(store.info["format_version"]),
        tables=tables,
        segments=len(list_segment_dirs(store.loc)),
        segment_bytes=_tree_bytes(store, store.loc.path(SEGMENTS_DIR)),
        feature_sets=fsets,
    )


@dataclass
class VerifyReport:
    fragments_checked: int = 0
    segments_checked: int = 0
    rows_checked: int = 0
    problems: list[str] = field(default_factory=list)
    unreadable_fragments: list[str] = field(default_factory=list)  # fragment paths whose Parquet does not read
    broken_segments: list[str] = field(default_factory=list)  # segment ids whose data is missing or corrupt
    lost_markers: dict[str, str] = field(default_factory=dict)  # transaction id -> the run that committed it
    broken_indexes: list[str] = field(default_factory=list)  # search indexes (path without suffix) failing checks
    indexes_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(
    store: FeatureStore, *, read_data: bool = True, progress: Callable[[int, int], None] | None = None
) -> VerifyReport:
    """Check every fragment parses and every manifest row resolves to readable, checksummed data.

    Problems are collected (segment id, feature set, what is wrong); the rest keeps being checked.
    ``progress(done, total)`` is called after each segment.
    """
    report = VerifyReport()
    store.refresh()
    for txid, run_id in committed_by_runs(store).items():
        if not store.loc.fs.exists(txn_marker(store.loc, txid)):
            report.lost_markers[txid] = run_id
            report.problems.append(
                f"run {run_id} committed transaction {txid} but its commit marker txns/{txid}.json is gone, so the "
                "rows it wrote are invisible; `medprobe store quarantine` restores the marker"
            )
    for name in TABLES:
        for frag in list_fragments(store.loc, name):
            report.fragments_checked += 1
            why = store.catalog.unreadable.get(frag["name"])  # a foreign or wrongly typed fragment the views skip
            try:
                with store.loc.fs.open(frag["name"], "rb") as f:
                    pq.read_metadata(f)
            except (OSError, ValueError) as e:
                why = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if why is not None:
                report.unreadable_fragments.append(frag["name"])
                report.problems.append(
                    f"table {name}: fragment {frag['name']} unreadable ({why}); `medprobe store quarantine` moves it "
                    "aside"
                )
    _verify_indexes(store, report)
    segs = store.catalog.query(
        "SELECT segment_id, any_value(feature_set_id) AS feature_set_id, list(DISTINCT layer) AS layers, "
        "max(row) AS max_row, count(*) AS n FROM raw_activations GROUP BY segment_id ORDER BY segment_id"
    ).to_pylist()
    for seg in segs:
        if progress is not None:
            progress(report.segments_checked, len(segs))
        report.segments_checked += 1
        report.rows_checked += int(seg["n"])
        sid, fsid = seg["segment_id"], seg["feature_set_id"]
        n_problems = len(report.problems)
        where = f"segment {sid} (feature set {fsid})"
        try:
            attrs = store.segments.attrs(sid)
        except (FileNotFoundError, KeyError, ValueError, OSError) as e:
            report.problems.append(f"{where}: missing or unreadable group: {type(e).__name__}: {e}")
            report.broken_segments.append(sid)
            continue
        for layer in sorted(seg["layers"]):
            try:
                lay = store.segments.layout(sid, layer)
                if lay.shape[0] <= seg["max_row"] or lay.shape[0] != attrs.get("n_rows"):
                    report.problems.append(
                        f"{where}: layer {layer} has {lay.shape[0]} rows, the manifest needs {seg['max_row'] + 1}"
                    )
                    continue
                missing = store.segments.check_chunk_files(sid, layer)
                if missing:
                    report.problems.append(f"{where}: layer {layer} ({layer_array_name(layer)}): {'; '.join(missing)}")
                    continue
                if read_data:
                    data = store.segments.read_all(sid, layer)
                    if not np.isfinite(np.asarray(data, dtype=np.float32)).all():
                        report.problems.append(f"{where}: layer {layer} holds NaN or Inf values")
            except (CorruptDataError, FileNotFoundError, KeyError, ValueError, OSError) as e:
                msg = str(e).splitlines()[0][:200]
                report.problems.append(f"{where}: layer {layer} ({layer_array_name(layer)}) unreadable: {msg}")
        if len(report.problems) > n_problems:
            report.broken_segments.append(sid)
    if progress is not None:
        progress(report.segments_checked, len(segs))
    return report


@dataclass
class GCReport:
    removed_segments: list[str] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)
    removed_superseded: list[str] = field(default_factory=list)  # fragments a compaction replaced
    kept_recent: int = 0
    committed: int = 0


def _age(store: FeatureStore, path: str, name: str, now: dt.datetime) -> dt.timedelta:
    born = id_time(name)
    try:
        mtime = store.loc.fs.modified(path)
        mtime = mtime if mtime.tzinfo else mtime.replace(tzinfo=dt.UTC)
        born = max(born, mtime) if born else mtime
    except (FileNotFoundError, NotImplementedError, OSError):
        pass
    return now - born if born else dt.timedelta(0)


MIN_GC_GRACE = dt.timedelta(minutes=15)  # far longer than one segment write (seconds), the writer's window


def _human(d: dt.timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s // 3600}h" if s and s % 3600 == 0 else f"{s // 60}m" if s and s % 60 == 0 else f"{s}s"


def _verify_indexes(store: FeatureStore, report: VerifyReport) -> None:
    """Every stored search index must match its checksum (a load would rebuild it; verify says so)."""
    from medprobe.featurestore.index import INDEX_DIR, check_index

    root = store.loc.path(INDEX_DIR)
    try:
        paths = [p for p in store.loc.fs.find(root) if p.endswith(".faiss")]
    except FileNotFoundError:
        return
    for path in sorted(paths):
        base = posixpath.relpath(path[: -len(".faiss")], store.loc.path())
        report.indexes_checked += 1
        why = check_index(store, base)
        if why is not None:
            report.broken_indexes.append(base)
            report.problems.append(
                f"search index {base}.faiss: {why}; the next `medprobe search` rebuilds it, `medprobe store "
                "quarantine` moves it aside"
            )


def committed_by_runs(store: FeatureStore) -> dict[str, str]:
    """``{transaction id: run id}`` of every transaction a finished run records as committed (format 5 runs)."""
    rows = store.catalog.query(
        "SELECT run_id, unnest(transactions) AS txid FROM runs WHERE transactions IS NOT NULL"
    ).to_pylist()
    return {r["txid"]: r["run_id"] for r in rows}


def gc_store(
    store: FeatureStore, grace: dt.timedelta, *, dry_run: bool = False, min_grace: dt.timedelta = MIN_GC_GRACE
) -> GCReport:
    """Remove segment folders no manifest fragment references, and stale temp files, older than ``grace``.

    Committed data is never touched: a segment referenced by any activations fragment is kept. ``grace`` below
    ``min_grace`` is refused: a live writer commits its manifest after its segment is written, and gc must not
    remove that segment first (lower ``min_grace`` only for a store no process is writing to).
    """
    if grace < min_grace:
        raise InvalidInputError(
            f"--grace {_human(grace)} is shorter than the minimum {_human(min_grace)}: a live extraction may be about "
            f"to commit a segment that young; use --grace {_human(min_grace)} or more"
        )
    report = GCReport()
    store.refresh()
    committed = set(store.catalog.query("SELECT DISTINCT segment_id FROM raw_activations").column(0).to_pylist())
    # a manifest fragment is named after its segment: count those too, even if unreadable
    committed |= {posixpath.basename(f["name"])[: -len(".parquet")] for f in list_fragments(store.loc, "activations")}
    now = dt.datetime.now(dt.UTC)
    recorded = committed_by_runs(store)  # committed, whatever happened to their markers: never removed
    for sid in list_segment_dirs(store.loc):
        if sid in committed:
            report.committed += 1
            continue
        path = segment_path(store.loc, sid)
        if _age(store, posixpath.join(path, "zarr.json"), sid, now) < grace:
            report.kept_recent += 1
            continue
        report.removed_segments.append(sid)
        if not dry_run:
            store.loc.fs.rm(path, recursive=True)
    for name in TABLES:
        for entry in list_files(store.loc, table_dir(store.loc, name)):
            base = posixpath.basename(entry["name"])
            txid = txn_of(base)
            if txid is not None and not store.loc.fs.exists(txn_marker(store.loc, txid)):
                if txid not in recorded and _age(store, entry["name"], txid, now) >= grace:  # never committed
                    report.removed_temp_files.append(entry["name"])
                    if not dry_run:
                        store.loc.fs.rm(entry["name"])
                continue
            if base.startswith(".") and base.endswith(".tmp") and _age(store, entry["name"], "", now) >= grace:
                report.removed_temp_files.append(entry["name"])
                if not dry_run:
                    store.loc.fs.rm(entry["name"])
                continue
            by = store.catalog.superseded_by.get(base)
            born = id_time(by) if by else None
            if by and born is not None and now - born >= grace:  # replaced by a compaction that long ago
                report.removed_superseded.append(entry["name"])
                if not dry_run:
                    store.loc.fs.rm(entry["name"])
    for path in _stale_temp_files(store, now, grace):  # e.g. a blob half-copied by a killed `ingest --copy`
        report.removed_temp_files.append(path)
        if not dry_run:
            store.loc.fs.rm(path)
    return report


_NO_TEMP_WALK = {"segments", "tables", "quarantine"}  # segments: their own rule above; tables: above; quarantine: kept


def _stale_temp_files(store: FeatureStore, now: dt.datetime, grace: dt.timedelta) -> list[str]:
    """Temporary files of atomic writes (``.<name>.<pid>-<hex>.tmp``) older than ``grace`` anywhere else in the store
    (blobs/, files/, txns/, locks/): what a process killed mid-write leaves."""
    out = []
    for top in list_files(store.loc, store.loc.path()):
        if posixpath.basename(top["name"].rstrip("/")) in _NO_TEMP_WALK or top.get("type") != "directory":
            continue
        for path in store.loc.fs.find(top["name"]):
            base = posixpath.basename(path)
            if base.startswith(".") and base.endswith(".tmp") and _age(store, path, "", now) >= grace:
                out.append(path)
    return out


@dataclass
class CompactReport:
    table: str
    fragments_before: int
    fragments_after: int
    rows: int
    excluded_rows: int = 0
    transaction: str | None = None


COMPACT_LOCK = "locks/compact-{table}.lock"


def _take_compact_lock(store: FeatureStore, lock: str) -> bool:
    """Create the compaction lock, or take it over from a compaction whose process is gone (killed on this host)."""
    import os
    import socket

    from medprobe.featurestore.exclusive import create_exclusive, take_over
    from medprobe.featurestore.runs import process_gone
    from medprobe.schemas import utcnow

    body = json.dumps({"at": utcnow().isoformat(), "pid": os.getpid(), "host": socket.gethostname()}).encode()
    if create_exclusive(store.loc, lock, body):
        return True
    try:
        seen = bytes(store.loc.fs.cat_file(lock))
        holder = json.loads(seen)
    except FileNotFoundError:
        return create_exclusive(store.loc, lock, body)  # released meanwhile
    except ValueError:
        return False
    return process_gone(holder.get("host"), holder.get("pid")) and take_over(store.loc, lock, seen, body)


def compact_table(
    store: FeatureStore, table: str, *, min_fragments: int = 16, exclude_segments: frozenset[str] = frozenset()
) -> CompactReport:
    """Rewrite the visible fragments of ``table`` as one, atomically: the new fragment is written inside a transaction
    whose commit marker names the fragments it replaces, so readers see either all the old fragments or the new one,
    never both or neither. ``store gc`` removes the replaced files once the grace period has passed.

    ``exclude_segments`` (activations only) leaves those segments' manifest rows out; they are first written to
    ``quarantine/activations/`` (nothing is deleted). One compaction per table at a time (a lock file).
    """
    from medprobe.featurestore.fragments import TXN_PREFIX, append_fragment
    from medprobe.featurestore.fsio import write_atomic
    from medprobe.featurestore.ids import new_id
    from medprobe.schemas import utcnow

    if table not in TABLES:
        raise InvalidInputError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    if exclude_segments and table != "activations":
        raise InvalidInputError("exclude_segments applies to the activations table only")
    store.check_writable()
    lock = store.loc.path(COMPACT_LOCK.format(table=table))
    if not _take_compact_lock(store, lock):
        raise InvalidInputError(f"another compaction of {table} holds {lock}; wait for it, or remove the file if no "
                                "compaction is running")  # fmt: skip
    try:
        store.catalog.refresh([table])
        files = store.catalog.fragment_files(table)
        report = CompactReport(table, len(files), len(files), 0)
        if len(files) < max(min_fragments, 1) and not exclude_segments:
            return report
        spec = TABLES[table]
        data = store.catalog.query(f"SELECT * FROM ({store.catalog.fragments_sql(spec, files)})")
        txid = new_id("txn")
        if exclude_segments:
            mask = [s in exclude_segments for s in data.column("segment_id").to_pylist()]
            excluded = data.filter(pa.array(mask))
            data = data.filter(pa.array([not m for m in mask]))
            report.excluded_rows = excluded.num_rows
            if excluded.num_rows:
                buf = io.BytesIO()
                pq.write_table(excluded, buf)
                write_atomic(store.loc, store.loc.path(QUARANTINE_DIR, table, f"{txid}-excluded.parquet"),
                             buf.getvalue())  # fmt: skip
        store._migrate_for_writing()
        append_fragment(store.loc, table, data, name=f"{TXN_PREFIX}{txid}--{new_id()}")
        body = {"committed_at": utcnow().isoformat(), "compaction": table,
                "supersedes": {table: [posixpath.basename(f) for f in files]}}  # fmt: skip
        write_atomic(store.loc, txn_marker(store.loc, txid), json.dumps(body).encode())  # the switch
        store.refresh()
        report.fragments_after = len(store.catalog.fragment_files(table))
        report.rows, report.transaction = data.num_rows, txid
        return report
    finally:
        store.loc.fs.rm(lock)


QUARANTINE_DIR = "quarantine"


@dataclass
class QuarantineReport:
    moved: list[tuple[str, str]] = field(default_factory=list)  # (from, to)
    restored_markers: list[str] = field(default_factory=list)  # commit markers rewritten from the runs record
    rows_hidden: int = 0  # manifest rows whose data was gone: extraction will redo them


def quarantine(store: FeatureStore, report: VerifyReport, *, dry_run: bool = False) -> QuarantineReport:
    """Move aside (never delete) what ``verify`` found broken: unreadable fragments of any table, and the manifest
    fragments of segments whose data is missing or corrupt, so their rows become missing and re-extractable.

    Files go to ``<store>/quarantine/<table>/`` under their own names. A commit marker that is gone while the run
    that committed the transaction records it is written again (the transaction's rows become visible again).
    """
    out = QuarantineReport()
    for txid, run_id in sorted(report.lost_markers.items()):
        out.restored_markers.append(txn_marker(store.loc, txid))
        if not dry_run:
            body = json.dumps({"committed_by_run": run_id, "restored_at": utcnow().isoformat()}).encode()
            write_atomic(store.loc, txn_marker(store.loc, txid), body)
    targets = list(report.unreadable_fragments)
    if report.broken_segments:
        counts = store.catalog.query(
            "SELECT segment_id, count(*) AS n FROM raw_activations WHERE list_contains(?, segment_id) GROUP BY 1",
            [report.broken_segments],
        ).to_pylist()
        out.rows_hidden = sum(int(r["n"]) for r in counts)
        live = {posixpath.basename(f) for f in store.catalog.fragment_files("activations")}
        compacted = frozenset(sid for sid in report.broken_segments if f"{sid}.parquet" not in live)
        targets += [
            posixpath.join(table_dir(store.loc, "activations"), f"{sid}.parquet")
            for sid in report.broken_segments
            if sid not in compacted
        ]
        if compacted and not dry_run:  # their rows live in a compacted fragment: rewrite it without them
            compact_table(store, "activations", exclude_segments=compacted)
    for base in report.broken_indexes:  # each file of the index, to quarantine/indexes/<feature set>/<layer>/
        for suffix in (".faiss", ".hashes", ".sha256"):
            src = store.loc.path(base + suffix)
            dst = store.loc.path(QUARANTINE_DIR, base + suffix)
            out.moved.append((src, dst))
            if not dry_run and store.loc.fs.exists(src):
                store.loc.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
                store.loc.fs.mv(src, dst)
    for src in dict.fromkeys(targets):
        table = posixpath.basename(posixpath.dirname(src))
        dst = store.loc.path(QUARANTINE_DIR, table, posixpath.basename(src))
        out.moved.append((src, dst))
        if not dry_run and store.loc.fs.exists(src):
            store.loc.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
            store.loc.fs.mv(src, dst)
    if not dry_run:
        store.refresh()
    return out
