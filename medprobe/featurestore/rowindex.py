"""Manifest rows as numpy: string columns as sortable keys, segment ids as small codes, dedup and order.

The whole-layer read sorts and deduplicates 10^5-10^6 manifest rows; doing it on numpy views of the Arrow
buffers (no Python list of strings, no window function in SQL) keeps it to a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa


def _flat(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def string_keys(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numpy array that sorts and compares like the strings in ``column`` do in byte order (DuckDB's ORDER BY).

    Equal-length strings (hex hashes, ids) become a zero-copy fixed-width bytes view of the Arrow data buffer;
    otherwise an object array of Python strings (code point order equals UTF-8 byte order).
    """
    arr = _flat(column)
    if arr.null_count:
        raise ValueError("string column has nulls")
    n = len(arr)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
        buffers = arr.buffers()
        offsets = np.frombuffer(buffers[1], dtype=offset_type)[arr.offset : arr.offset + n + 1]
        width = int(offsets[1] - offsets[0]) if n else 0
        if width > 0 and int(offsets[-1] - offsets[0]) == width * n and (np.diff(offsets) == width).all():
            data = np.frombuffer(buffers[2], dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
            return data.view(f"S{width}")
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)


def encode_runs(column: pa.Array | pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """``(values, codes)`` with ``values[codes[i]] == column[i]``: cheap when equal values come in runs.

    Manifest rows of one segment are stored together, so a column of segment ids is a few long runs.
    """
    keys = string_keys(column)
    n = len(keys)
    if n == 0:
        return [], np.zeros(0, dtype=np.int32)
    starts = np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1])
    run_values = [v.decode() if isinstance(v, bytes) else str(v) for v in keys[starts]]
    index: dict[str, int] = {}
    run_codes = np.fromiter((index.setdefault(v, len(index)) for v in run_values), np.int32, len(run_values))
    lengths = np.diff(np.concatenate([starts, [n]]))
    return list(index), np.repeat(run_codes, lengths)


@dataclass
class Where:
    """Where requested rows live: output row ``i`` is row ``rows[i]`` of segment ``segment_ids[codes[i]]``."""

    segment_ids: list[str]
    codes: np.ndarray  # int32
    rows: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.rows.size)

    def take(self, index: np.ndarray | slice) -> Where:
        return Where(self.segment_ids, self.codes[index], self.rows[index])


def prefix64(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of fixed-width bytes keys (itemsize >= 8) as uint64s that order like the keys."""
    return np.ascontiguousarray(keys.view(np.uint8).reshape(keys.size, -1)[:, :8]).view(">u8").ravel().astype(np.uint64)


def _argsort_keys(keys: np.ndarray) -> np.ndarray:
    """``argsort`` of string keys; for fixed-width bytes, on their first 8 bytes as integers, ties fixed after.

    Sorting 64-bit integers is about twice as fast as sorting 64-byte strings; hashes rarely share a prefix.
    """
    if keys.dtype.kind != "S" or keys.dtype.itemsize < 8 or keys.size < 1024:
        return np.argsort(keys, kind="stable")
    prefix = prefix64(keys)
    order = np.argsort(prefix)
    ordered = prefix[order]
    tied = np.flatnonzero(ordered[1:] == ordered[:-1])
    if tied.size > 64:  # not hash-like: sort the whole strings
        return np.argsort(keys, kind="stable")
    if tied.size:
        starts = tied[np.concatenate([[True], np.diff(tied) > 1])]
        for start in starts:
            stop = start + 1
            while stop < order.size and ordered[stop] == ordered[start]:
                stop += 1
            run = order[start:stop]
            order[start:stop] = run[np.argsort(keys[run], kind="stable")]
    return order


def first_per_key(keys: np.ndarray, segment_ids: list[str], codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Indices of one row per distinct key, in key order; among equal keys the smallest (segment_id, row).

    The same choice as the deduplicated ``activations`` view.
    """
    order = _argsort_keys(keys)
    ordered = keys[order]
    if not (ordered[1:] == ordered[:-1]).any():
        return order
    segment_rank = np.argsort(np.argsort(np.asarray(segment_ids, dtype=object), kind="stable")).astype(np.int64)
    order = np.lexsort((rows, segment_rank[codes], keys))
    ordered = keys[order]
    keep = np.ones(order.size, dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return order[keep]


def _same_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality of two fixed-width bytes arrays of one dtype (as integers: numpy's string == is slow)."""
    width = a.dtype.itemsize
    unit = np.uint64 if width % 8 == 0 else np.uint8
    a2 = np.ascontiguousarray(a).view(unit).reshape(a.size, -1)
    b2 = np.ascontiguousarray(b).view(unit).reshape(b.size, -1)
    same = a2[:, 0] == b2[:, 0]
    for j in range(1, a2.shape[1]):  # column by column: a reduction along the short axis is several times slower
        same &= a2[:, j] == b2[:, j]
    return same


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it permutes the 64-bit integers (Fibonacci hashing)


class SortedKeys:
    """Sorted, distinct fixed-width bytes keys (hex hashes) with an index to find many keys at once.

    Exact-match search on the keys' first 8 bytes as integers, scrambled by a multiplication (a bijection, so equal
    prefixes stay equal and distinct ones distinct) so that its top bits are uniform even for ASCII hex: a bucket
    table on those bits gives each wanted key a range of about one candidate, and a few vectorised binary-search
    steps pick it; the full key is then compared. A prefix shared by several keys falls back to a full-key search.
    ``find`` of 100,000 hashes among 100,000 takes a few milliseconds.
    """

    def __init__(self, keys: np.ndarray) -> None:
        if keys.dtype.kind != "S":
            raise TypeError("SortedKeys holds fixed-width bytes keys")
        self.keys = keys
        n = keys.size
        self.mixed: np.ndarray | None = None
        if keys.dtype.itemsize >= 8 and n:
            mixed = np.multiply(prefix64(keys), _MIX, dtype=np.uint64)
            self.by_mixed = np.argsort(mixed)
            self.mixed = mixed[self.by_mixed]
            bits = min(20, max(1, n.bit_length()))  # about one key per bucket, at most 8 MB of bounds
            self.shift = np.uint64(64 - bits)
            counts = np.bincount((self.mixed >> self.shift).astype(np.int64), minlength=1 << bits)
            self.bounds = np.concatenate([[0], np.cumsum(counts)])
            self.steps = int(counts.max()).bit_length()  # binary-search steps that cover the fullest bucket

    def find(self, wanted: np.ndarray) -> np.ndarray:
        """Position of each of ``wanted`` (same dtype as the keys) in the keys; -1 where absent."""
        keys, n = self.keys, self.keys.size
        if n == 0:
            return np.full(wanted.size, -1, dtype=np.int64)
        if self.mixed is None:
            pos = np.minimum(np.searchsorted(keys, wanted), n - 1)
            return np.where(_same_rows(keys[pos], wanted), pos, -1).astype(np.int64, copy=False)
        want = np.multiply(prefix64(wanted), _MIX, dtype=np.uint64)
        bucket = (want >> self.shift).astype(np.int64)
        lo, hi = self.bounds[bucket], self.bounds[bucket + 1]
        for _ in range(self.steps):  # lower bound of ``want`` in mixed[lo:hi], all at once
            mid = (lo + hi) >> 1
            below = (lo < hi) & (self.mixed[np.minimum(mid, n - 1)] < want)
            hi = np.where(below | (lo >= hi), hi, mid)
            lo = np.where(below, mid + 1, lo)
        lo = np.minimum(lo, n - 1)
        pos = self.by_mixed[lo]
        hit = _same_rows(keys[pos], wanted)
        tied = np.flatnonzero(~hit & (self.mixed[lo] == want))  # same prefix, another key: search the full keys
        if tied.size:
            again = np.minimum(np.searchsorted(keys, wanted[tied]), n - 1)
            pos[tied] = again
            hit[tied] = _same_rows(keys[again], wanted[tied])
        return np.where(hit, pos, -1).astype(np.int64, copy=False)


@dataclass
class LayerRows:
    """Every stored image of one layer, deduplicated, in image_hash order, with where its row lives."""

    scanned: pa.Array  # image hashes as the manifest scan returned them
    order: np.ndarray  # indices into ``scanned`` of the kept rows, in image_hash order
    where: Where  # where each kept row lives, in image_hash order
    _hashes: pa.Array | None = field(default=None, repr=False)
    _index: SortedKeys | None = field(default=None, repr=False)

    @classmethod
    def from_scan(cls, part: pa.Table) -> LayerRows:
        """From a manifest scan of one layer (image_hash, segment_id, row): the first row per image kept (smallest
        segment_id, then row, as the ``activations`` view)."""
        scanned = part.column("image_hash")
        scanned = scanned.combine_chunks() if scanned.num_chunks != 1 else scanned.chunk(0)
        segment_ids, codes = encode_runs(part.column("segment_id"))
        rows = part.column("row").to_numpy().astype(np.int64, copy=False)
        order = first_per_key(string_keys(scanned), segment_ids, codes, rows)
        return cls(scanned, order, Where(segment_ids, codes[order], rows[order]))

    @property
    def num_rows(self) -> int:
        return int(self.order.size)

    def hashes(self) -> pa.Array:
        """The image hashes in image_hash order (built on first use: a whole-layer read does not need them)."""
        if self._hashes is None:
            self._hashes = self.scanned.take(pa.array(self.order))
        return self._hashes

    def lookup(self, hashes: pa.Array) -> np.ndarray:
        """Position (in image_hash order) of each of ``hashes``; -1 where this layer has no row for it.

        Hex hashes (all of one length) are found by binary search in the sorted fixed-width keys, built on first
        use and kept with these rows; other strings by an Arrow hash lookup.
        """
        if self._index is None:
            keys = string_keys(self.scanned)
            # not fixed-width: no index, the Arrow lookup below
            self._index = SortedKeys(keys[self.order] if keys.dtype.kind == "S" else np.empty(0, "S1"))
        index = self._index
        if not hashes.null_count and len(hashes) and index.keys.size == self.num_rows:
            wanted = string_keys(hashes)
            if wanted.dtype == index.keys.dtype:
                return index.find(wanted)
        import pyarrow.compute as pc

        index = pc.index_in(hashes, value_set=self.hashes())
        return index.fill_null(-1).to_numpy().astype(np.int64, copy=False)

    def storage_order(self) -> np.ndarray:
        """Positions (in image_hash order) sorted by (segment_id, row): each chunk is then read about once."""
        rank = np.argsort(np.argsort(np.asarray(self.where.segment_ids, dtype=object), kind="stable"))
        return np.lexsort((self.where.rows, rank[self.where.codes]))
