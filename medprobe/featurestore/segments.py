"""Activation segments: one Zarr v3 group per commit, one 2-D array per layer.

A segment is written by exactly one writer in one call, so every chunk belongs to one
writer (zarr loses data when two writers share a chunk or a shard). Chunks carry a
crc32c checksum, so a truncated or corrupted chunk fails loudly on read and in
``store verify``. Rows are images in the order given at commit time; the manifest
(``activations`` table) maps (feature set, layer, image) to (segment, row).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.storage import FsspecStore, LocalStore

from medprobe.featurestore.fsio import Location, fsync_tree
from medprobe.schemas import FORMAT_VERSION

STORAGE_DTYPES = ("float16", "bfloat16", "float32")
CHUNK_BYTES = 16 * 2**20  # target bytes per chunk: large enough for fast scans, small for gathers
SEGMENTS_DIR = "segments"


def layer_array_name(layer: int) -> str:
    """Name of the array holding ``layer`` inside a segment group."""
    return f"layer_{layer:04d}"


def chunk_rows(n_rows: int, hidden: int, itemsize: int) -> int:
    """Rows per chunk so a chunk holds about ``CHUNK_BYTES``."""
    return int(max(1, min(n_rows, CHUNK_BYTES // max(1, hidden * itemsize))))


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _zarr_store(loc: Location, path: str, read_only: bool):
    if loc.is_local:
        return LocalStore(path, read_only=read_only)
    return FsspecStore.from_url(loc.full_url(path), read_only=read_only)


def segment_path(loc: Location, segment_id: str) -> str:
    return loc.path(SEGMENTS_DIR, segment_id)


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
    path = segment_path(loc, segment_id)
    group = zarr.open_group(_zarr_store(loc, path, read_only=False), mode="w-", zarr_format=3)
    dims: dict[int, int] = {}
    for layer in sorted(arrays):
        data = np.asarray(arrays[layer])
        if data.ndim != 2 or data.shape[0] != n:
            raise ValueError(f"layer {layer}: expected shape ({n}, hidden), got {data.shape}")
        if dtype == "bfloat16":
            stored, zdtype = to_bfloat16_bits(data), "uint16"
        else:
            stored, zdtype = np.ascontiguousarray(data, dtype=dtype), dtype
        hidden = int(data.shape[1])
        arr = group.create_array(
            layer_array_name(layer),
            shape=stored.shape,
            chunks=(chunk_rows(n, hidden, stored.itemsize), hidden),
            dtype=zdtype,
            compressors=[Crc32cCodec()],
            fill_value=0,
        )
        arr[...] = stored
        dims[layer] = hidden
    group.attrs.update(
        {
            "medprobe_format_version": FORMAT_VERSION,
            "feature_set_id": feature_set_id,
            "storage_dtype": dtype,
            "n_rows": n,
            "layers": sorted(dims),
            "image_hashes": list(image_hashes),
        }
    )
    if loc.is_local:
        fsync_tree(path)
    return dims


class SegmentReader:
    """Opens segment arrays lazily and caches the handles (segments are immutable)."""

    def __init__(self, loc: Location, cache_size: int = 4096) -> None:
        self.loc = loc
        self._open = lru_cache(maxsize=cache_size)(self._open_uncached)

    def _open_uncached(self, segment_id: str, layer: int) -> tuple[zarr.Array, str]:
        path = segment_path(self.loc, segment_id)
        group = zarr.open_group(_zarr_store(self.loc, path, read_only=True), mode="r", zarr_format=3)
        return group[layer_array_name(layer)], str(group.attrs.get("storage_dtype", "float16"))

    def attrs(self, segment_id: str) -> dict:
        """The segment's attributes (feature set, layers, row count, image hashes)."""
        path = segment_path(self.loc, segment_id)
        group = zarr.open_group(_zarr_store(self.loc, path, read_only=True), mode="r", zarr_format=3)
        return dict(group.attrs)

    def array(self, segment_id: str, layer: int) -> zarr.Array:
        return self._open(segment_id, layer)[0]

    def read_rows(self, segment_id: str, layer: int, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order, no duplicates needed) of one layer, as float16/float32 numpy."""
        arr, dtype = self._open(segment_id, layer)
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        lo, hi = int(sorted_rows[0]), int(sorted_rows[-1]) + 1
        if hi - lo == len(sorted_rows) or (hi - lo) <= 2 * len(sorted_rows):
            block = arr[lo:hi]  # dense enough: one contiguous range read
            data = block[sorted_rows - lo]
        else:
            data = arr.get_orthogonal_selection((sorted_rows, slice(None)))
        out = np.empty_like(data)
        out[order] = data
        if dtype == "bfloat16":
            out = from_bfloat16_bits(out)
        return out

    def read_all(self, segment_id: str, layer: int) -> np.ndarray:
        arr, dtype = self._open(segment_id, layer)
        data = arr[...]
        return from_bfloat16_bits(data) if dtype == "bfloat16" else data


def list_segment_dirs(loc: Location) -> list[str]:
    """Ids of every segment folder present (committed or not)."""
    try:
        entries = loc.fs.ls(loc.path(SEGMENTS_DIR), detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)
