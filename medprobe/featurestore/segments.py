"""Activation segments: one Zarr v3 group per commit, one 2-D array per layer.

A segment is written by exactly one writer in one call, so every chunk belongs to one
writer (zarr loses data when two writers share a chunk or a shard). Every chunk is
written, even an all-zero one, and carries a crc32c checksum (codecs ``bytes`` +
``crc32c``, no compression: fp16 hidden states compress about 1.09x with zstd and read
several times slower, see ``benchmarks/bench_store.py``). So a missing, truncated or
corrupted chunk fails loudly on read and in ``store verify``. Rows are images in the
order given at commit time; the manifest (``activations`` table) maps (feature set,
layer, image) to (segment, row). The image hashes are also kept beside the arrays in
``image_hashes.txt`` (one per line, row order), so a segment describes itself.

The segment stays a plain Zarr v3 group that ``zarr.open_group`` reads. zarr writes the
metadata; chunks are written and read here directly (one file per chunk, read by a few
threads with one ``readv`` each, straight into the output rows where they land in order,
and checked against its crc32c), which runs at page-cache speed where zarr's generic codec
pipeline is about four times slower on these arrays.
"""

from __future__ import annotations

import json
import os
import posixpath
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.storage import FsspecStore, LocalStore

from medprobe.errors import CorruptDataError, InvalidInputError
from medprobe.featurestore.fsio import Location, fsync_tree
from medprobe.schemas import FORMAT_VERSION, STORAGE_DTYPES

CHUNK_BYTES = 4 * 2**20  # target bytes per chunk: measured fastest for full reads; small enough for gathers
SEGMENTS_DIR = "segments"
HASHES_FILE = "image_hashes.txt"
ALIGN = 4096  # bytes: alignment of read buffers (see aligned_empty)
READ_THREADS = 2  # chunk readers per process: measured on 2 cores, more gains nothing
_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]


def layer_array_name(layer: int) -> str:
    """Name of the array holding ``layer`` inside a segment group."""
    return f"layer_{layer:04d}"


def chunk_rows(n_rows: int, hidden: int, itemsize: int) -> int:
    """Rows per chunk: about ``CHUNK_BYTES`` per chunk, split evenly so the last chunk is not mostly padding."""
    n_rows = max(1, n_rows)
    per_chunk = max(1, CHUNK_BYTES // max(1, hidden * itemsize))
    n_chunks = -(-n_rows // per_chunk)
    return -(-n_rows // n_chunks)


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _crc32c(data: np.ndarray) -> int:
    view = data.reshape(-1).view(np.uint8)
    view.flags.writeable = False  # google_crc32c takes read-only buffers only
    return int(google_crc32c.value(view))


def _zarr_store(loc: Location, path: str, read_only: bool) -> LocalStore | FsspecStore:
    if loc.is_local:
        return LocalStore(path, read_only=read_only)
    return FsspecStore.from_url(loc.full_url(path), read_only=read_only)


def segment_path(loc: Location, segment_id: str) -> str:
    return loc.path(SEGMENTS_DIR, segment_id)


def _chunk_path(array_path: str, index: int, separator: str = ".") -> str:
    """Path of chunk ``(index, 0)`` under zarr v3's default chunk key encoding (``c.<i>.0``, or ``c/<i>/0``)."""
    return posixpath.join(array_path, separator.join(("c", str(index), "0")))


def _put(loc: Location, path: str, parts: Sequence[memoryview | bytes]) -> None:
    if loc.is_local:
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            for part in parts:
                f.write(part)
    else:
        loc.fs.pipe_file(path, b"".join(bytes(p) for p in parts))


def write_segment(
    loc: Location,
    segment_id: str,
    feature_set_id: str,
    image_hashes: Sequence[str],
    arrays: Mapping[int, np.ndarray],
    dtype: str = "float16",
) -> dict[int, int]:
    """Write and make durable one segment; returns ``{layer: hidden}``. Does not commit it."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype {dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
    n = len(image_hashes)
    stored: dict[int, np.ndarray] = {}
    for layer in sorted(arrays):
        data = np.asarray(arrays[layer])
        if data.ndim != 2 or data.shape[0] != n:
            raise ValueError(f"layer {layer}: expected shape ({n}, hidden), got {data.shape}")
        if dtype == "bfloat16":
            stored[layer] = to_bfloat16_bits(data)
        else:
            stored[layer] = np.ascontiguousarray(data, dtype=dtype)
    path = segment_path(loc, segment_id)
    attrs = {
        "medprobe_format_version": FORMAT_VERSION,
        "feature_set_id": feature_set_id,
        "storage_dtype": dtype,
        "n_rows": n,
        "layers": sorted(stored),
        "image_hashes_file": HASHES_FILE,
    }
    group = zarr.open_group(
        _zarr_store(loc, path, read_only=False), mode="w-", zarr_format=3, attributes=cast(dict[str, Any], attrs)
    )
    _put(loc, posixpath.join(path, HASHES_FILE), ["\n".join(image_hashes).encode() + b"\n"])
    dims: dict[int, int] = {}
    for layer, data in stored.items():
        hidden = int(data.shape[1])
        rows = chunk_rows(n, hidden, data.itemsize)
        group.create_array(
            layer_array_name(layer),
            shape=data.shape,
            chunks=(rows, hidden),
            dtype=data.dtype,
            serializer=BytesCodec(endian="little"),
            compressors=[Crc32cCodec()],
            fill_value=0,
            attributes={"storage_dtype": dtype},
            chunk_key_encoding={"name": "default", "separator": "."},  # chunk files side by side: fewer dirs to fsync
            config={"write_empty_chunks": True},
        )
        array_path = posixpath.join(path, layer_array_name(layer))
        for index, start in enumerate(range(0, n, rows)):
            chunk = data[start : start + rows]
            if chunk.shape[0] < rows:  # zarr stores the last chunk at full size, padded with the fill value
                chunk = np.concatenate([chunk, np.zeros((rows - chunk.shape[0], hidden), dtype=data.dtype)])
            crc = np.uint32(_crc32c(chunk)).astype("<u4").tobytes()
            _put(loc, _chunk_path(array_path, index), [memoryview(cast(Any, chunk.reshape(-1).view(np.uint8))), crc])
        dims[layer] = hidden
    if loc.is_local:
        fsync_tree(path)
    return dims


@dataclass(frozen=True)
class LayerArray:
    """One layer of a segment as laid out on disk."""

    path: str
    separator: str  # of the chunk keys
    shape: tuple[int, int]
    chunk_rows: int
    dtype: np.dtype  # on-disk dtype (uint16 for bfloat16)
    storage_dtype: str


def _readv_exact(fd: int, parts: list[np.ndarray]) -> int:
    """``readv`` into ``parts`` until they are full or the file ends; returns the bytes read."""
    views = [memoryview(cast(Any, p)).cast("B") for p in parts if p.nbytes]
    total = 0
    while views:
        got = os.readv(fd, views)
        if got == 0:
            break
        total += got
        while views and got >= views[0].nbytes:
            got -= views[0].nbytes
            views.pop(0)
        if views and got:
            views[0] = views[0][got:]
    return total


def _read_chunk_into(loc: Location, path: str, parts: list[np.ndarray]) -> None:
    """Read one chunk file into the byte arrays ``parts`` (in file order) and check it against its crc32c.

    Local files are read with one ``readv`` straight into the destinations (the caller's output rows where they
    land in order, a scratch buffer otherwise), so the bytes are copied once, by the kernel.
    """
    nbytes = sum(p.nbytes for p in parts)
    stored = np.zeros(4, dtype=np.uint8)
    if loc.is_local:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size != nbytes + 4:
                raise CorruptDataError(f"chunk {path} has {size} bytes, expected {nbytes + 4}: truncated")
            got = _readv_exact(fd, [*parts, stored])
        finally:
            os.close(fd)
        if got != nbytes + 4:
            raise CorruptDataError(f"chunk {path} has {got} bytes, expected {nbytes + 4}: truncated")
    else:
        raw = loc.fs.cat_file(path)
        if len(raw) != nbytes + 4:
            raise CorruptDataError(f"chunk {path} has {len(raw)} bytes, expected {nbytes + 4}: truncated")
        at = 0
        for p in parts:
            p[...] = np.frombuffer(raw, dtype=np.uint8, count=p.nbytes, offset=at)
            at += p.nbytes
        stored[...] = np.frombuffer(raw, dtype=np.uint8, count=4, offset=at)
    crc = 0
    for p in parts:
        view = p.view()
        view.flags.writeable = False  # google_crc32c takes read-only buffers only
        crc = google_crc32c.extend(crc, view)
    if int(crc) != int.from_bytes(stored.tobytes(), "little"):
        raise CorruptDataError(f"chunk {path} fails its crc32c checksum: corrupted")


def _read_threads() -> int:
    return max(1, min(READ_THREADS, os.cpu_count() or 1))


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_scratch = threading.local()


def _reset_pool() -> None:  # a forked child has none of its parent's threads
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_reset_pool)


def _read_pool() -> ThreadPoolExecutor:
    """The process's chunk-reading threads (file reads, crc32c and numpy copies release the GIL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_read_threads(), thread_name_prefix="medprobe-read")
        return _pool


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type | str) -> np.ndarray:
    """``np.empty`` whose data starts on a page boundary.

    The kernel copies file data several times faster into a cache-line aligned buffer (measured 4x here: large
    ``np.empty`` arrays start 16 bytes into a page), so every buffer a chunk is read into is aligned.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _scratch_bytes(nbytes: int) -> np.ndarray:
    """A per-thread reusable, page-aligned byte buffer of at least ``nbytes``."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = aligned_empty((nbytes,), np.uint8)
        _scratch.buf = buf
    return buf[:nbytes]


class SegmentReader:
    """Reads segment layers chunk by chunk; caches the (immutable) array layouts."""

    def __init__(self, loc: Location, cache_size: int = 4096) -> None:
        self.loc = loc
        self._layout = lru_cache(maxsize=cache_size)(self._layout_uncached)
        self._open = lru_cache(maxsize=64)(self._open_zarr)

    def _layout_uncached(self, segment_id: str, layer: int) -> LayerArray:
        path = posixpath.join(segment_path(self.loc, segment_id), layer_array_name(layer))
        meta = json.loads(self.loc.fs.cat_file(posixpath.join(path, "zarr.json")))
        key = meta.get("chunk_key_encoding", {})
        grid = meta.get("chunk_grid", {})
        shape = tuple(int(s) for s in meta["shape"])
        chunks = tuple(int(c) for c in grid.get("configuration", {}).get("chunk_shape", ()))
        if (
            meta.get("codecs") != _CODECS
            or key.get("name") != "default"
            or key.get("configuration", {}).get("separator", "/") not in ("/", ".")
            or grid.get("name") != "regular"
            or len(shape) != 2
            or chunks[1:] != shape[1:]
            or meta.get("data_type") not in ("float16", "float32", "uint16")
        ):
            raise CorruptDataError(
                f"segment {segment_id} layer {layer}: unexpected array layout in {path}/zarr.json (codecs, "
                "chunking or dtype); it was not written by this medprobe"
            )
        storage = str(meta.get("attributes", {}).get("storage_dtype", meta["data_type"]))
        separator = key.get("configuration", {}).get("separator", "/")
        return LayerArray(path, separator, (shape[0], shape[1]), chunks[0], np.dtype(meta["data_type"]), storage)

    def _open_zarr(self, segment_id: str, layer: int) -> zarr.Array:
        path = segment_path(self.loc, segment_id)
        group = zarr.open_group(_zarr_store(self.loc, path, read_only=True), mode="r", zarr_format=3)
        array = group[layer_array_name(layer)]
        if not isinstance(array, zarr.Array):
            raise CorruptDataError(f"segment {segment_id}: {layer_array_name(layer)} is not an array")
        return array

    def layout(self, segment_id: str, layer: int) -> LayerArray:
        """Shape, chunking and dtype of one layer (read from its zarr.json once)."""
        return self._layout(segment_id, layer)

    def attrs(self, segment_id: str) -> dict:
        """The segment's attributes (feature set, layers, row count, storage dtype)."""
        path = segment_path(self.loc, segment_id)
        return dict(json.loads(self.loc.fs.cat_file(posixpath.join(path, "zarr.json"))).get("attributes", {}))

    def image_hashes(self, segment_id: str) -> list[str]:
        """The image hashes of a segment's rows, in row order."""
        path = posixpath.join(segment_path(self.loc, segment_id), HASHES_FILE)
        return self.loc.fs.cat_file(path).decode().split()

    def array(self, segment_id: str, layer: int) -> zarr.Array:
        """The layer as a zarr array (for tools that want zarr; reads here do not go through it)."""
        return self._open(segment_id, layer)

    def check_chunk_files(self, segment_id: str, layer: int) -> list[str]:
        """Missing or wrongly sized chunk files of one layer, without reading them (``store verify --quick``)."""
        lay = self.layout(segment_id, layer)
        n, hidden = lay.shape
        size = lay.chunk_rows * hidden * lay.dtype.itemsize + 4
        present = {
            posixpath.basename(e["name"]): int(e.get("size") or 0) for e in self.loc.fs.ls(lay.path, detail=True)
        }
        problems = []
        for index in range(-(-n // lay.chunk_rows)):
            name = posixpath.basename(_chunk_path(lay.path, index, lay.separator)) if lay.separator == "." else None
            if name is None:  # "/"-separated keys live in sub-folders: ask for the file itself
                path = _chunk_path(lay.path, index, lay.separator)
                got = int(self.loc.fs.size(path)) if self.loc.fs.exists(path) else None
            else:
                got = present.get(name)
            if got is None:
                problems.append(f"chunk {index} is missing")
            elif got != size:
                problems.append(f"chunk {index} has {got} bytes, expected {size} (truncated)")
        return problems

    def output_dtype(self, segment_id: str, layer: int) -> np.dtype:
        """The dtype reads return: float16, or float32 for float32 and bfloat16 segments."""
        lay = self.layout(segment_id, layer)
        return np.dtype(np.float32) if lay.storage_dtype == "bfloat16" else lay.dtype

    def read_rows(self, segment_id: str, layer: int, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) of one layer, as float16/float32 numpy."""
        rows = np.asarray(rows, dtype=np.int64)
        out = aligned_empty((rows.size, self.layout(segment_id, layer).shape[1]), self.output_dtype(segment_id, layer))
        self.read_into(segment_id, layer, rows, out, None)
        return out

    def read_all(self, segment_id: str, layer: int) -> np.ndarray:
        """The whole layer."""
        return self.read_rows(segment_id, layer, np.arange(self.layout(segment_id, layer).shape[0]))

    def read_into(
        self, segment_id: str, layer: int, rows: np.ndarray, out: np.ndarray, positions: np.ndarray | None
    ) -> None:
        """Fill ``out[positions[i]]`` (``out[i]`` when None) with row ``rows[i]`` of one layer.

        Each chunk holding a requested row is read once and checked against its crc32c; chunks are read by a few
        threads at once. Rows that land in order go straight from the file into ``out``; others are read into a
        per-thread scratch buffer and copied to their places.
        """
        lay = self.layout(segment_id, layer)
        n = lay.shape[0]
        r = lay.chunk_rows
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        if rows.min() < 0 or rows.max() >= n:
            raise CorruptDataError(
                f"segment {segment_id} layer {layer} has {n} rows; the manifest asks for row {int(rows.max())}"
            )
        if positions is None:
            positions = np.arange(rows.size, dtype=np.int64)
        which = rows // r
        n_chunks = -(-n // r)
        # chunk ids are small: a stable sort of uint16 keys is a radix sort (linear time)
        order = np.argsort(which.astype(np.uint16 if n_chunks <= 65536 else np.int64), kind="stable")
        bounds = np.flatnonzero(np.diff(which[order])) + 1
        tasks = [(int(which[g[0]]), rows[g], positions[g]) for g in np.split(order, bounds)]

        def read_chunk(task: tuple[int, np.ndarray, np.ndarray]) -> None:
            index, chunk_rows_, where = task
            self._read_chunk_to(lay, index, chunk_rows_ - index * r, where, out)

        if len(tasks) == 1 or _read_threads() == 1:
            for task in tasks:
                read_chunk(task)
            return
        futures = [_read_pool().submit(read_chunk, task) for task in tasks]
        wait(futures)  # every thread is done with ``out`` before this returns or raises
        for future in futures:
            future.result()

    def _read_chunk_to(
        self, lay: LayerArray, index: int, local: np.ndarray, where: np.ndarray, out: np.ndarray
    ) -> None:
        """Read chunk ``index`` and put its rows ``local`` at ``out[where]``."""
        r, hidden = lay.chunk_rows, lay.shape[1]
        row_bytes = hidden * lay.dtype.itemsize
        path = _chunk_path(lay.path, index, lay.separator)
        k = local.size
        first = int(local[0])
        in_order = (
            lay.storage_dtype != "bfloat16"
            and out.dtype == lay.dtype
            and out.flags.c_contiguous
            and int(local[-1]) - first == k - 1
            and int(where[-1]) - int(where[0]) == k - 1
            and (k == 1 or (bool((np.diff(local) == 1).all()) and bool((np.diff(where) == 1).all())))
        )
        if in_order:  # consecutive rows to consecutive places: straight from the file into ``out``
            start = int(where[0])
            target = out[start : start + k].reshape(-1).view(np.uint8)
            scratch = _scratch_bytes((r - k) * row_bytes)
            before, after = scratch[: first * row_bytes], scratch[first * row_bytes :]
            _read_chunk_into(self.loc, path, [before, target, after])
            return
        raw = _scratch_bytes(r * row_bytes)
        _read_chunk_into(self.loc, path, [raw])
        chunk = raw.view(lay.dtype).reshape(r, hidden)
        by_row = np.argsort(local, kind="stable")
        local, where = local[by_row], where[by_row]
        first = int(local[0])
        if int(local[-1]) - first == k - 1 and (np.diff(local) == 1).all():
            source = chunk[first : first + k]  # every row of a range (a permutation): no gather, one scatter
        else:
            source = chunk[local]
        out[where] = from_bfloat16_bits(source) if lay.storage_dtype == "bfloat16" else source


def list_segment_dirs(loc: Location) -> list[str]:
    """Ids of every segment folder present (committed or not)."""
    try:
        entries = loc.fs.ls(loc.path(SEGMENTS_DIR), detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


def check_fits_float16(layer: int, arr: np.ndarray) -> None:
    """Refuse finite values that float16 would turn into inf (hidden states of some LLMs exceed 65504)."""
    if arr.dtype == np.float16 or not np.issubdtype(arr.dtype, np.floating):
        return
    too_big = np.abs(arr) > np.finfo(np.float16).max
    if too_big.any():
        raise InvalidInputError(
            f"layer {layer}: {int(too_big.sum())} value(s) exceed the float16 range (|x| > 65504, largest "
            f"{float(np.nanmax(np.abs(arr))):.4g}); store this feature set as bfloat16 or float32"
        )
