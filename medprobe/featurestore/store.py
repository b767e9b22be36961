"""The FeatureStore: Parquet tables, Zarr activation segments and SQL behind one object."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from medprobe.errors import CorruptDataError, InvalidInputError, NotFoundError, StoreFormatError
from medprobe.featurestore.catalog import Catalog
from medprobe.featurestore.exclusive import create_exclusive
from medprobe.featurestore.files import STORE_URI, FileArea, StoreBlobs
from medprobe.featurestore.fragments import TXN_PREFIX, append_fragment, to_arrow, txn_marker
from medprobe.featurestore.fsio import (
    Location,
    is_credentials_error,
    naming_the_store,
    resolve,
    write_atomic,
)
from medprobe.featurestore.ids import new_id
from medprobe.featurestore.migration import mark_vqa_item_rows
from medprobe.featurestore.rowindex import LayerRows, Where
from medprobe.featurestore.segments import SegmentReader, aligned_empty, check_fits_float16, write_segment
from medprobe.schemas import FORMAT_VERSION, STORAGE_DTYPES, TABLES, FeatureSetRow, Row, utcnow

MARKER = "medprobe.json"
DEFAULT_URL = "./medprobe-store"
STORE_ENV = "MEDPROBE_STORE"
MANIFEST_CACHE_ROWS = 4_000_000  # located rows kept for repeated reads (about 110 bytes each)


def default_store_url() -> str:
    """The store used when none is named: ``$MEDPROBE_STORE`` or ``./medprobe-store``."""
    return os.environ.get(STORE_ENV) or DEFAULT_URL


class FeatureStore:
    """A medprobe store at a URL: ``FeatureStore.open("./medprobe-store")``."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        self.info = self._check_format()
        self.catalog = Catalog(loc)
        self.segments = SegmentReader(loc)
        self._known_feature_sets: dict[str, FeatureSetRow] = {}
        self._txn: str | None = None  # the open transaction's id (see :meth:`transaction`)
        self.committed_transactions: list[str] = []  # committed through this handle (runs record theirs)
        # (feature set, layer) -> (activations fragment list, stored rows in image_hash order)
        self._manifest_cache: OrderedDict[tuple[str, int], tuple[tuple[str, ...], LayerRows]] = OrderedDict()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, url: str | None = None, create: bool = True) -> FeatureStore:
        """Open (and by default create) the store at ``url``; refuses a newer format version."""
        url = url or default_store_url()
        try:
            return cls._open(url, create)
        except Exception as e:
            if "://" in url and not url.startswith(("file://", "memory://")) and is_credentials_error(e):
                bucket = url.split("://", 1)[-1].split("/", 1)[0]
                raise InvalidInputError(
                    f"store {url}: the credentials for bucket {bucket!r} are missing or refused "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); set AWS_PROFILE or "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a non-AWS endpoint)"
                ) from e
            raise

    @classmethod
    def _open(cls, url: str, create: bool) -> FeatureStore:
        loc = resolve(url)
        if loc.fs.isfile(loc.path()):
            raise InvalidInputError(f"store {url} is a file, not a store folder: pass --store a folder or URL")
        marker = loc.path(MARKER)
        if not loc.fs.exists(marker):
            if not create:
                raise NotFoundError(f"no medprobe store at {url} (no {MARKER}); create one by ingesting data")
            body = {"format_version": FORMAT_VERSION, "created_at": utcnow().isoformat()}
            with naming_the_store(url, "creating the store"):
                create_exclusive(loc, marker, json.dumps(body, indent=1).encode(), required=False)
        return cls(loc)

    def _check_format(self) -> dict[str, Any]:
        raw = self.loc.fs.cat_file(self.loc.path(MARKER))
        try:
            info = json.loads(raw)
            version = int(info["format_version"])
        except (ValueError, KeyError, TypeError) as e:
            raise StoreFormatError(f"{self.loc.url}/{MARKER} is not a medprobe store marker: {e}") from e
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"store {self.loc.url} has format version {version}, newer than this medprobe's "
                f"version {FORMAT_VERSION}; upgrade medprobe to read it"
            )
        return info

    def _migrate_for_writing(self) -> None:
        """Before the first write into an older-format store, mark it current (the migration).

        Older fragments read as they are (``schemas.version.CHANGES``: an absent column reads as its default), so
        migrating is rewriting the marker, except where a default would be wrong: format 4 re-appends the members of
        VQA datasets as ``vqa_item`` rows first (a kill before the marker is rewritten repeats that, harmlessly: the
        latest row wins). It must happen before a write that an older reader would misread.
        """
        version = int(self.info["format_version"])
        if version >= FORMAT_VERSION:
            return
        if version < 4:
            with naming_the_store(self.url, "migrating VQA item rows to format 4"):
                mark_vqa_item_rows(self.loc, self.catalog)
        info = dict(self.info)
        info["format_version"] = FORMAT_VERSION
        info.setdefault("migrations", []).append({"from": version, "to": FORMAT_VERSION, "at": utcnow().isoformat()})
        with naming_the_store(self.url, "migrating the store's format marker"):
            write_atomic(self.loc, self.loc.path(MARKER), json.dumps(info, indent=1).encode())
        self.info = info

    @property
    def url(self) -> str:
        return self.loc.url

    @property
    def unreadable_fragments(self) -> dict[str, str]:
        """Fragments left out of every table because their Parquet does not read: path -> why."""
        return dict(self.catalog.unreadable)

    def close(self) -> None:
        self.catalog.close()

    # ------------------------------------------------------------------ tables and SQL
    def append(self, table: str, rows: Sequence[Row] | pa.Table) -> None:
        """Append rows to ``table`` as one immutable, atomically written Parquet fragment."""
        data = to_arrow(table, rows if isinstance(rows, pa.Table) else list(rows))
        if data.num_rows == 0:
            return
        self._migrate_for_writing()
        name = f"{TXN_PREFIX}{self._txn}--{new_id()}" if self._txn is not None else None
        with naming_the_store(self.url, f"appending {data.num_rows} {table} row(s)"):
            append_fragment(self.loc, table, data, name=name)
        if self._txn is None:  # inside a transaction nothing new is visible until it commits
            self.catalog.refresh([table])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Appends inside the block become visible together when it ends, or never (an exception, a kill).

        Fragments are written as usual but named after the transaction; readers skip them until its commit marker
        (``txns/<txid>.json``, one atomic write) exists. A nested block joins the outer one. Segments committed inside
        are visible at once (each commit is atomic on its own).
        """
        if self._txn is not None:
            yield
            return
        self._txn = new_id("txn")
        try:
            yield
            body = json.dumps({"committed_at": utcnow().isoformat(), "pid": os.getpid()}).encode()
            with naming_the_store(self.url, "committing a transaction"):
                write_atomic(self.loc, txn_marker(self.loc, self._txn), body)
            self.committed_transactions.append(self._txn)
        finally:
            self._txn = None
            self.catalog.refresh()

    def refresh(self) -> None:
        """See fragments committed by other processes since the last look."""
        self.catalog.refresh()

    def table(self, table: str) -> pa.Table:
        """Every visible (deduplicated) row of ``table``."""
        if table not in TABLES:
            raise NotFoundError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        self.catalog.refresh([table])
        return self.catalog.query(f'SELECT * FROM "{table}"')

    def sql(self, query: str, params: Sequence[Any] | dict | None = None) -> pa.Table:
        """Run a read-only SQL query over the store's views; returns Arrow."""
        self.catalog.refresh()
        return self.catalog.read_only_query(query, params)

    def sql_numpy(self, query: str, params: Sequence[Any] | dict | None = None) -> dict[str, np.ndarray]:
        """Like :meth:`sql`, returning ``{column: numpy array}`` (no pandas)."""
        table = self.sql(query, params)
        return {
            name: col.to_numpy(zero_copy_only=False)
            for name, col in zip(table.column_names, table.columns, strict=True)
        }

    # ------------------------------------------------------------------ feature sets
    def register_feature_set(self, row: FeatureSetRow) -> None:
        """Record a feature set's definition (idempotent: the first row for an id wins)."""
        if row.feature_set_id in self._known_feature_sets:
            return
        try:
            self._known_feature_sets[row.feature_set_id] = self.feature_set(row.feature_set_id)
        except NotFoundError:
            self.append("feature_sets", [row])
            self._known_feature_sets[row.feature_set_id] = row

    def feature_set(self, feature_set_id: str) -> FeatureSetRow:
        """The definition of ``feature_set_id``; NotFoundError lists the ones that exist."""
        if feature_set_id in self._known_feature_sets:
            return self._known_feature_sets[feature_set_id]
        self.catalog.refresh(["feature_sets"])
        t = self.catalog.query("SELECT * FROM feature_sets WHERE feature_set_id = ?", [feature_set_id])
        if t.num_rows == 0:
            ids = self.catalog.query("SELECT feature_set_id, model_id, pooling FROM feature_sets ORDER BY 1")
            known = ", ".join(
                f"{i} ({m}, {p})" for i, m, p in zip(*(ids.column(c).to_pylist() for c in range(3)), strict=True)
            )
            raise NotFoundError(f"unknown feature set {feature_set_id!r}; the store has: {known or 'none'}")
        row = FeatureSetRow(**{k: v[0] for k, v in t.to_pydict().items()})
        self._known_feature_sets[feature_set_id] = row
        return row

    def layers(self, feature_set_id: str) -> list[int]:
        """Layer indices that have at least one committed row for ``feature_set_id``."""
        self.catalog.refresh(["activations"])
        t = self.catalog.query(
            "SELECT DISTINCT layer FROM raw_activations WHERE feature_set_id = ? ORDER BY layer",
            [feature_set_id],
        )
        return t.column("layer").to_pylist()

    # ------------------------------------------------------------------ activations: write
    def commit_segment(
        self,
        feature_set_id: str,
        image_hashes: Sequence[str],
        arrays: Mapping[int, np.ndarray],
        dtype: str = "float16",
    ) -> str:
        """Write one segment (all layers for these images), make it durable, then commit its manifest.

        Returns the segment id. Until the manifest fragment exists, no reader sees the data.
        """
        fset = self.feature_set(feature_set_id)
        hashes = [str(h) for h in image_hashes]
        if len(set(hashes)) != len(hashes):
            raise InvalidInputError("commit_segment: the same image hash appears twice in one segment")
        if not hashes or not arrays:
            raise InvalidInputError("commit_segment: nothing to commit (no images or no layers)")
        if dtype not in STORAGE_DTYPES:
            raise InvalidInputError(f"storage dtype {dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
        for layer, arr in arrays.items():
            if not 0 <= layer < fset.n_layers:
                raise InvalidInputError(
                    f"layer {layer} is out of range for feature set {feature_set_id} ({fset.n_layers} layers)"
                )
            shape = np.shape(arr)
            if len(shape) != 2 or shape[0] != len(hashes):
                raise InvalidInputError(
                    f"layer {layer}: expected an array of shape ({len(hashes)}, hidden) for {len(hashes)} images, "
                    f"got {shape}"
                )
            expected = fset.hidden_sizes[layer] if layer < len(fset.hidden_sizes) else None
            if expected and shape[-1] != expected:
                raise InvalidInputError(
                    f"layer {layer}: hidden size {shape[-1]} != {expected} declared by {feature_set_id}"
                )
            if dtype == "float16":
                check_fits_float16(layer, np.asarray(arr))
        segment_id = new_id("seg")
        self._migrate_for_writing()
        with naming_the_store(self.url, f"writing segment {segment_id}"):
            write_segment(self.loc, segment_id, feature_set_id, hashes, arrays, dtype=dtype)
        n = len(hashes)
        layers = sorted(arrays)
        hash_array = pa.array(hashes, pa.string())
        manifest = pa.table(
            {
                "feature_set_id": pa.repeat(pa.scalar(feature_set_id, pa.string()), n * len(layers)),
                "layer": pa.array(np.repeat(np.asarray(layers, dtype=np.int32), n), pa.int32()),
                "image_hash": pa.concat_arrays([hash_array] * len(layers)),
                "segment_id": pa.repeat(pa.scalar(segment_id, pa.string()), n * len(layers)),
                "row": pa.array(np.tile(np.arange(n, dtype=np.int32), len(layers)), pa.int32()),
            },
            schema=TABLES["activations"].schema,
        )
        self._check_segment_whole(segment_id, layers)
        with naming_the_store(self.url, f"committing segment {segment_id}"):
            append_fragment(self.loc, "activations", manifest, name=segment_id)
        return segment_id

    def _check_segment_whole(self, segment_id: str, layers: Sequence[int]) -> None:
        """Refuse to commit a manifest whose segment is no longer whole on storage (e.g. removed by a gc)."""
        try:
            problems = [f"layer {x}: {p}" for x in layers for p in self.segments.check_chunk_files(segment_id, x)]
        except (FileNotFoundError, KeyError, ValueError) as e:
            problems = [f"{type(e).__name__}: {e}"]
        if problems:
            raise CorruptDataError(
                f"segment {segment_id} was written but is not whole any more ({problems[0]}); its rows are not "
                "committed: rerun the command (was `medprobe store gc` run on this store meanwhile?)"
            )

    # ------------------------------------------------------------------ activations: read
    def existing(self, feature_set_id: str, layers: Sequence[int] | None = None) -> pa.Table:
        """Committed ``(layer, image_hash)`` pairs of a feature set (optionally only ``layers``)."""
        self.catalog.refresh(["activations"])
        sql = "SELECT DISTINCT layer, image_hash FROM raw_activations WHERE feature_set_id = ?"
        params: list[Any] = [feature_set_id]
        if layers is not None:
            sql += " AND list_contains(?, layer)"
            params.append([int(x) for x in layers])
        return self.catalog.query(sql, params)

    def coverage(
        self,
        dataset: str,
        feature_set_ids: Sequence[str],
        layers: Sequence[int],
        splits: Sequence[str] | None = None,
    ) -> pa.Table:
        """Every image of ``dataset`` (optionally only ``splits``) in image_hash order, with its ``uri`` and
        ``n_have``: how many of the wanted (feature set, layer) rows are committed for it."""
        self.catalog.refresh()
        split_sql = " AND list_contains(?, di.split)" if splits else ""
        params: list[Any] = [dataset, *([list(splits)] if splits else [])]
        params += [list(feature_set_ids), [int(x) for x in layers]]
        return self.catalog.query(
            f"""
            WITH want AS (
                SELECT di.image_hash, i.uri FROM dataset_images di LEFT JOIN images i USING (image_hash)
                WHERE di.dataset = ?{split_sql}
            ), have AS (
                SELECT image_hash, count(*) AS n FROM (
                    SELECT DISTINCT feature_set_id, layer, image_hash FROM raw_activations
                    WHERE list_contains(?, feature_set_id) AND list_contains(?, layer)
                ) GROUP BY image_hash
            )
            SELECT w.image_hash, w.uri, coalesce(h.n, 0)::INTEGER AS n_have
            FROM want w LEFT JOIN have h USING (image_hash) ORDER BY w.image_hash
            """,
            params,
        )

    def committed_rows(
        self, image_hashes: Sequence[str], feature_set_ids: Sequence[str], layers: Sequence[int]
    ) -> pa.Table:
        """The committed ``(image_hash, feature_set_id, layer)`` rows among the given images, feature sets, layers."""
        if not image_hashes:
            return pa.table({"image_hash": pa.array([], pa.string()), "feature_set_id": pa.array([], pa.string()),
                             "layer": pa.array([], pa.int32())})  # fmt: skip
        self.catalog.refresh(["activations"])
        name = f"_wanted_{new_id().replace('-', '_')}"
        self.catalog.register_temp(name, pa.table({"image_hash": pa.array(list(image_hashes), pa.string())}))
        try:
            return self.catalog.query(
                f"SELECT DISTINCT a.image_hash, a.feature_set_id, a.layer FROM raw_activations a JOIN {name} p "
                "USING (image_hash) WHERE list_contains(?, a.feature_set_id) AND list_contains(?, a.layer)",
                [list(feature_set_ids), [int(x) for x in layers]],
            )
        finally:
            self.catalog.unregister_temp(name)

    def file_area(self, name: str) -> FileArea:
        """The folder ``<store>/<name>/`` of small files a component keeps in the store (e.g. the job queue)."""
        return FileArea(self.loc, name)

    def check_writable(self) -> None:
        """Raise InvalidInputError when the store cannot be written (call before expensive work)."""
        probe = self.loc.path("tmp", f".write-check-{os.getpid()}-{new_id()}")
        try:
            write_atomic(self.loc, probe, b"ok")
            self.loc.fs.rm(probe)
        except OSError as e:
            raise InvalidInputError(
                f"store {self.url} is read-only ({type(e).__name__}: {getattr(e, 'strerror', None) or e}); "
                "write into a writable store (--store) or fix its permissions"
            ) from e

    def _resolve_hashes(
        self,
        feature_set_id: str,
        layer: int,
        image_hashes: Sequence[str] | pa.Array | pa.ChunkedArray | None,
        sql: str | None,
    ) -> pa.Array:
        """The requested image hashes as an Arrow string array (checks the feature set exists)."""
        if image_hashes is not None and sql is not None:
            raise InvalidInputError("pass either image_hashes or sql, not both")
        self.feature_set(feature_set_id)
        if sql is not None:
            t = self.sql(sql)
            if "image_hash" not in t.column_names:
                raise InvalidInputError(f"the selection query must return an image_hash column; got {t.column_names}")
            return t.column("image_hash").combine_chunks().cast(pa.string())
        if image_hashes is not None:
            if isinstance(image_hashes, pa.ChunkedArray):
                image_hashes = image_hashes.combine_chunks()
            if isinstance(image_hashes, pa.Array):
                return image_hashes.cast(pa.string())
            try:
                return pa.array(
                    image_hashes if isinstance(image_hashes, list | np.ndarray) else list(image_hashes), pa.string()
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return pa.array([str(h) for h in image_hashes], pa.string())
        return self._stored_rows(feature_set_id, layer).hashes()

    def _stored_rows(self, feature_set_id: str, layer: int) -> LayerRows:
        """Every stored image of one layer with where it lives (see :meth:`_stored_rows_many`)."""
        return self._stored_rows_many(feature_set_id, [layer])[int(layer)]

    def _stored_rows_many(self, feature_set_id: str, layers: Sequence[int]) -> dict[int, LayerRows]:
        """Every stored image of each of ``layers`` with where it lives (one manifest scan for all, then cached).

        The scan only filters and projects (DuckDB pushes both into the Parquet reader); deduplication (smallest
        segment_id, then row, as the ``activations`` view) and the image_hash order are done on numpy views of the
        Arrow buffers. Fragments are immutable, so the answer is cached until the activations fragment list changes.
        """
        self.catalog.refresh(["activations"])
        files = self.catalog.fragment_files("activations")
        out: dict[int, LayerRows] = {}
        for layer in dict.fromkeys(int(x) for x in layers):
            hit = self._manifest_cache.get((feature_set_id, layer))
            if hit is not None and hit[0] == files:
                self._manifest_cache.move_to_end((feature_set_id, layer))
                out[layer] = hit[1]
        missing = [int(x) for x in dict.fromkeys(layers) if int(x) not in out]
        if not missing:
            return out
        t = self.catalog.scan_activations(feature_set_id, missing)
        layer_col = t.column("layer").to_numpy() if len(missing) > 1 else None
        for layer in missing:
            part = t if layer_col is None else t.filter(pa.array(layer_col == layer))
            if part.num_rows == 0:
                self.feature_set(feature_set_id)  # unknown feature set: say which exist
                have = self.layers(feature_set_id)
                raise NotFoundError(
                    f"feature set {feature_set_id} has no rows for layer {layer}; stored layers: {have or 'none'}"
                )
            out[layer] = LayerRows.from_scan(part)
            self._manifest_cache[(feature_set_id, layer)] = (files, out[layer])
        while sum(v[1].num_rows for v in self._manifest_cache.values()) > MANIFEST_CACHE_ROWS:
            self._manifest_cache.popitem(last=False)
        return out

    def locate(self, feature_set_id: str, layers: Sequence[int], image_hashes: Sequence[str]) -> dict[int, pa.Table]:
        """One manifest query for many layers: ``{layer: table(pos, segment_id, row)}`` sorted by pos."""
        out = {}
        for layer, where in self._locate(feature_set_id, layers, image_hashes).items():
            out[layer] = pa.table(
                {
                    "pos": pa.array(np.arange(len(where), dtype=np.int64)),
                    "segment_id": pa.array(where.segment_ids, pa.string()).take(pa.array(where.codes)),
                    "row": pa.array(where.rows.astype(np.int32)),
                }
            )
        return out

    def _locate(self, feature_set_id: str, layers: Sequence[int], image_hashes: Sequence[str]) -> dict[int, Where]:
        """:meth:`locate` as numpy (:class:`Where` per layer, in requested order).

        Each layer's stored rows (one manifest scan for all layers not cached) are searched for the requested
        hashes; duplicates among the stored rows were resolved when they were loaded.
        """
        self.feature_set(feature_set_id)
        layers = [int(x) for x in dict.fromkeys(layers)]
        hashes = image_hashes if isinstance(image_hashes, pa.Array) else pa.array(list(image_hashes), pa.string())
        stored = self._stored_rows_many(feature_set_id, layers)
        out: dict[int, Where] = {}
        for layer in layers:
            pos = stored[layer].lookup(hashes)
            if pos.size and pos.min() < 0:
                absent = np.flatnonzero(pos < 0)
                raise NotFoundError(
                    f"{absent.size} of {len(hashes)} requested images have no activations for feature set "
                    f"{feature_set_id} layer {layer} (first: {hashes[int(absent[0])].as_py()}); extract them first"
                )
            out[layer] = stored[layer].where.take(pos)
        return out

    def _gather(self, feature_set_id: str, layer: int, where: Where) -> np.ndarray:
        """Rows listed in ``where`` (in requested order) as one array."""
        rows = where.rows
        n = len(where)  # row i of ``where`` fills output row i
        if n == 0:
            fset = self.feature_set(feature_set_id)
            hidden = fset.hidden_sizes[layer] if layer < len(fset.hidden_sizes) else 0
            return np.empty((0, hidden), dtype=np.float16 if fset.storage_dtype == "float16" else np.float32)
        codes = where.codes
        used = np.flatnonzero(np.bincount(codes, minlength=len(where.segment_ids)))
        segment_ids = [where.segment_ids[int(c)] for c in used]
        try:
            dtypes = {self.segments.output_dtype(sid, layer) for sid in segment_ids}
            widths = {self.segments.layout(sid, layer).shape[1] for sid in segment_ids}
            if len(widths) != 1:
                raise CorruptDataError(f"segments disagree on the hidden size of layer {layer}: {sorted(widths)}")
            dtype = np.float16 if dtypes == {np.dtype(np.float16)} else np.float32
            out = aligned_empty((n, widths.pop()), dtype)
            if len(segment_ids) == 1:
                segment_id = segment_ids[0]
                self.segments.read_into(segment_id, layer, rows, out, None)
            else:
                by_segment = np.argsort(codes, kind="stable")
                bounds = np.flatnonzero(np.diff(codes[by_segment])) + 1
                for positions in np.split(by_segment, bounds):
                    segment_id = where.segment_ids[int(codes[positions[0]])]
                    self.segments.read_into(segment_id, layer, rows[positions], out, positions)
        except (CorruptDataError, FileNotFoundError, KeyError, ValueError, OSError) as e:
            bad = segment_id if "segment_id" in locals() else ", ".join(segment_ids[:3])
            raise CorruptDataError(
                f"segment {bad} of feature set {feature_set_id} (layer {layer}) cannot be read: "
                f"{type(e).__name__}: {e}; run `medprobe store verify`"
            ) from e
        return out

    def read(
        self,
        feature_set_id: str,
        layer: int,
        image_hashes: Sequence[str] | None = None,
        *,
        sql: str | None = None,
    ) -> np.ndarray:
        """Activations of one layer as ``(rows, hidden)`` in the requested order.

        ``image_hashes`` or ``sql`` (a SELECT returning ``image_hash``) choose the rows; with neither,
        every stored image of that layer in image_hash order.
        """
        return self.read_layers(feature_set_id, [layer], image_hashes, sql=sql)[layer]

    def read_layers(
        self,
        feature_set_id: str,
        layers: Sequence[int],
        image_hashes: Sequence[str] | None = None,
        *,
        sql: str | None = None,
    ) -> dict[int, np.ndarray]:
        """Several layers for the same images with a single manifest query.

        With neither ``image_hashes`` nor ``sql``: every stored image of the first layer, in image_hash order.
        """
        layers = list(dict.fromkeys(int(x) for x in layers))
        if not layers:
            raise InvalidInputError("read_layers: no layers requested")
        if image_hashes is None and sql is None:
            stored = self._stored_rows_many(feature_set_id, layers)[layers[0]]
            where = {layers[0]: stored.where}
            if len(layers) > 1:
                where.update(self._locate(feature_set_id, layers[1:], stored.hashes()))
        else:
            hashes = self._resolve_hashes(feature_set_id, layers[0], image_hashes, sql)
            where = self._locate(feature_set_id, layers, hashes)
        return {layer: self._gather(feature_set_id, layer, where[layer]) for layer in layers}

    def iter_batches(
        self,
        feature_set_id: str,
        layer: int,
        image_hashes: Sequence[str] | None = None,
        *,
        sql: str | None = None,
        batch_rows: int = 65536,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(image_hashes, X)`` batches of at most ``batch_rows`` rows; memory bounded by one batch.

        With neither ``image_hashes`` nor ``sql``: every stored image in storage order (segment by segment, so each
        chunk is read about once); otherwise the requested order.
        """
        if batch_rows < 1:
            raise InvalidInputError(f"batch_rows must be at least 1, got {batch_rows}")
        layer = int(layer)
        if image_hashes is None and sql is None:
            stored = self._stored_rows(feature_set_id, layer)
            by_storage = stored.storage_order()
            hashes = stored.hashes().take(pa.array(by_storage))
            where = stored.where.take(by_storage)
        else:
            hashes = self._resolve_hashes(feature_set_id, layer, image_hashes, sql)
            where = self._locate(feature_set_id, [layer], hashes)[layer]
        for start in range(0, len(hashes), batch_rows):
            part = where.take(slice(start, start + batch_rows))
            yield hashes.slice(start, batch_rows).to_pylist(), self._gather(feature_set_id, layer, part)

    # ------------------------------------------------------------------ blobs
    def put_bytes(self, relpath: str, data: bytes) -> str:
        """Store ``data`` at ``relpath`` inside the store (atomically); returns ``store:<relpath>``."""
        rel = relpath.lstrip("/")
        if ".." in rel.split("/"):
            raise InvalidInputError(f"blob path {relpath!r} must stay inside the store")
        write_atomic(self.loc, self.loc.path(rel), data)
        return STORE_URI + rel

    def read_bytes(self, uri: str) -> bytes:
        """Bytes of ``store:<relpath>``, a local path or any fsspec URL."""
        if uri.startswith(STORE_URI):
            return StoreBlobs(self.url, self.loc).read(uri)
        with fsspec.open(uri, "rb") as f:
            return f.read()
