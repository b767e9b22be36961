"""The FeatureStore: Parquet tables, Zarr activation segments and SQL behind one object."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from medprobe.errors import CorruptDataError, InvalidInputError, NotFoundError, StoreFormatError
from medprobe.featurestore.catalog import Catalog
from medprobe.featurestore.fragments import append_fragment, to_arrow
from medprobe.featurestore.fsio import Location, create_exclusive, resolve, write_atomic
from medprobe.featurestore.ids import new_id
from medprobe.featurestore.segments import SegmentReader, write_segment
from medprobe.schemas import FORMAT_VERSION, FeatureSetRow, Row, utcnow

MARKER = "medprobe.json"
STORE_URI = "store:"
DEFAULT_URL = "./medprobe-store"


class FeatureStore:
    """A medprobe store at a URL: ``FeatureStore.open("./medprobe-store")``."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        self.info = self._check_format()
        self.catalog = Catalog(loc)
        self.segments = SegmentReader(loc)
        self._known_feature_sets: dict[str, FeatureSetRow] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, url: str | None = None, create: bool = True) -> FeatureStore:
        """Open (and by default create) the store at ``url``; refuses a newer format version."""
        url = url or os.environ.get("MEDPROBE_STORE") or DEFAULT_URL
        loc = resolve(url)
        marker = loc.path(MARKER)
        if not loc.fs.exists(marker):
            if not create:
                raise NotFoundError(f"no medprobe store at {url} (no {MARKER}); create one by ingesting data")
            body = {"format_version": FORMAT_VERSION, "created_at": utcnow().isoformat()}
            create_exclusive(loc, marker, json.dumps(body, indent=1).encode())
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

    @property
    def url(self) -> str:
        return self.loc.url

    def close(self) -> None:
        self.catalog.close()

    # ------------------------------------------------------------------ tables and SQL
    def append(self, table: str, rows: Sequence[Row] | pa.Table) -> None:
        """Append rows to ``table`` as one immutable, atomically written Parquet fragment."""
        data = to_arrow(table, rows if isinstance(rows, pa.Table) else list(rows))
        if data.num_rows == 0:
            return
        append_fragment(self.loc, table, data)
        self.catalog.refresh([table])

    def refresh(self) -> None:
        """See fragments committed by other processes since the last look."""
        self.catalog.refresh()

    def table(self, table: str) -> pa.Table:
        """Every visible (deduplicated) row of ``table``."""
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
        for layer, arr in arrays.items():
            if not 0 <= layer < fset.n_layers:
                raise InvalidInputError(
                    f"layer {layer} is out of range for feature set {feature_set_id} ({fset.n_layers} layers)"
                )
            expected = fset.hidden_sizes[layer] if layer < len(fset.hidden_sizes) else None
            if expected and np.shape(arr)[-1] != expected:
                raise InvalidInputError(
                    f"layer {layer}: hidden size {np.shape(arr)[-1]} != {expected} declared by {feature_set_id}"
                )
        segment_id = new_id("seg")
        write_segment(self.loc, segment_id, feature_set_id, hashes, arrays, dtype=dtype)
        n = len(hashes)
        layers = sorted(arrays)
        manifest = pa.table(
            {
                "feature_set_id": pa.array([feature_set_id] * (n * len(layers)), pa.string()),
                "layer": pa.array(np.repeat(np.asarray(layers, dtype=np.int32), n), pa.int32()),
                "image_hash": pa.array(hashes * len(layers), pa.string()),
                "segment_id": pa.array([segment_id] * (n * len(layers)), pa.string()),
                "row": pa.array(np.tile(np.arange(n, dtype=np.int32), len(layers)), pa.int32()),
            }
        )
        append_fragment(self.loc, "activations", to_arrow("activations", manifest), name=segment_id)
        return segment_id

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

    def _resolve_hashes(self, feature_set_id: str, layer: int, image_hashes, sql) -> list[str]:
        if image_hashes is not None and sql is not None:
            raise InvalidInputError("pass either image_hashes or sql, not both")
        if sql is not None:
            t = self.sql(sql)
            if "image_hash" not in t.column_names:
                raise InvalidInputError(f"the selection query must return an image_hash column; got {t.column_names}")
            return [str(h) for h in t.column("image_hash").to_pylist()]
        if image_hashes is not None:
            return [str(h) for h in image_hashes]
        t = self.catalog.query(
            "SELECT image_hash FROM activations WHERE feature_set_id = ? AND layer = ? ORDER BY image_hash",
            [feature_set_id, int(layer)],
        )
        return t.column("image_hash").to_pylist()

    def locate(self, feature_set_id: str, layers: Sequence[int], image_hashes: Sequence[str]) -> dict[int, pa.Table]:
        """One manifest query for many layers: ``{layer: table(pos, segment_id, row)}`` sorted by pos."""
        self.feature_set(feature_set_id)
        self.catalog.refresh(["activations"])
        layers = [int(x) for x in layers]
        have = set(self.layers(feature_set_id))
        missing_layers = [x for x in layers if x not in have]
        if missing_layers:
            raise NotFoundError(
                f"feature set {feature_set_id} has no rows for layer(s) {missing_layers}; "
                f"stored layers: {sorted(have) or 'none'}"
            )
        req = pa.table({"pos": pa.array(np.arange(len(image_hashes), dtype=np.int64)), "image_hash": image_hashes})
        name = f"_req_{new_id().replace('-', '_')}"
        self.catalog.register_temp(name, req)
        try:
            found = self.catalog.query(
                f"SELECT a.layer, q.pos, a.segment_id, a.row FROM {name} q JOIN activations a "
                "ON a.image_hash = q.image_hash WHERE a.feature_set_id = ? AND list_contains(?, a.layer) "
                "ORDER BY a.layer, q.pos",
                [feature_set_id, layers],
            )
        finally:
            self.catalog.unregister_temp(name)
        out: dict[int, pa.Table] = {}
        layer_col = found.column("layer").to_numpy()
        for layer in layers:
            part = found.filter(pa.array(layer_col == layer))
            if part.num_rows != len(image_hashes):
                got = set(part.column("pos").to_pylist())
                absent = [image_hashes[i] for i in range(len(image_hashes)) if i not in got]
                raise NotFoundError(
                    f"{len(absent)} of {len(image_hashes)} requested images have no activations for feature set "
                    f"{feature_set_id} layer {layer} (first: {absent[0][:16]}...); extract them first"
                )
            out[layer] = part.drop_columns(["layer"])
        return out

    def _gather(self, feature_set_id: str, layer: int, where: pa.Table) -> np.ndarray:
        seg = where.column("segment_id").to_numpy(zero_copy_only=False)
        rows = where.column("row").to_numpy()
        n = where.num_rows  # ``where`` is sorted by requested position: row i fills output row i
        out: np.ndarray | None = None
        for segment_id in np.unique(seg):
            mask = seg == segment_id
            try:
                data = self.segments.read_rows(str(segment_id), layer, rows[mask])
            except (FileNotFoundError, KeyError, ValueError, OSError) as e:
                raise CorruptDataError(
                    f"segment {segment_id} of feature set {feature_set_id} (layer {layer}) cannot be read: "
                    f"{type(e).__name__}: {e}; run `medprobe store verify`"
                ) from e
            if out is None:
                out = np.empty((n, data.shape[1]), dtype=data.dtype)
            out[np.flatnonzero(mask)] = data
        if out is None:
            fset = self.feature_set(feature_set_id)
            hidden = fset.hidden_sizes[layer] if layer < len(fset.hidden_sizes) else 0
            return np.empty((0, hidden), dtype=np.float32 if fset.storage_dtype != "float16" else np.float16)
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
        """Several layers for the same images with a single manifest query."""
        layers = [int(x) for x in layers]
        hashes = self._resolve_hashes(feature_set_id, layers[0], image_hashes, sql)
        where = self.locate(feature_set_id, layers, hashes)
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
        """Yield ``(image_hashes, X)`` batches of at most ``batch_rows`` rows; memory bounded by one batch."""
        hashes = self._resolve_hashes(feature_set_id, layer, image_hashes, sql)
        where = self.locate(feature_set_id, [layer], hashes)[layer]
        for start in range(0, len(hashes), batch_rows):
            part = where.slice(start, batch_rows)
            yield hashes[start : start + batch_rows], self._gather(feature_set_id, layer, part)

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
            return self.loc.fs.cat_file(self.loc.path(uri[len(STORE_URI) :]))
        with fsspec.open(uri, "rb") as f:
            return f.read()
