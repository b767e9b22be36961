"""Nearest-neighbour indexes of one (feature set, layer), built with FAISS and kept in the store.

Similarity is cosine: rows are L2-normalised float32 and searched by inner product. Up to ``EXACT_MAX_ROWS`` rows
the index is exact (``IndexFlatIP``, brute force); beyond, an HNSW graph (``IndexHNSWFlat``, M=32, efSearch=128),
approximate, which the result says. An index is keyed by the manifest state it was built from (a digest of the
sorted image hashes the layer has), stored under ``indexes/<feature set>/<layer>/<state>.faiss`` with its row order
beside it, and rebuilt only when that state changed (rows were added or removed); the superseded files are removed.
Each index carries a checksum (``<state>.sha256``: sha256 of the index bytes and the row order), written last: a
load that finds it missing or different rebuilds the index (and says so), and ``store verify`` checks it. Writes are
atomic, so a killed build leaves either the old index or an unchecked one (then the next search builds it).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import InvalidInputError, StoreWarning

if TYPE_CHECKING:
    from medprobe.featurestore.store import FeatureStore

EXACT_MAX_ROWS = 1_000_000
HNSW_M = 32
HNSW_EF_SEARCH = 128
INDEX_DIR = "indexes"


@dataclass
class NeighbourIndex:
    """A loaded index with the image hash of each of its rows."""

    index: Any  # faiss.Index
    hashes: list[str]
    kind: str  # exact | hnsw
    state: str
    built: bool  # built by this call (False: loaded from the store)

    @property
    def description(self) -> str:
        """What the index is, for users: ``exact (IndexFlatIP, 5,778 rows)``."""
        name = type(self.index).__name__
        return f"{self.kind} ({name}, {len(self.hashes):,} rows{', efSearch=128' if self.kind == 'hnsw' else ''})"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, row positions)`` of each query's ``k`` nearest rows (cosine)."""
        if not 1 <= k <= len(self.hashes):
            raise InvalidInputError(f"--k {k}: choose 1 to {len(self.hashes)} (the rows in the index)")
        sims, pos = self.index.search(normalised(queries), k)
        return sims, pos


def normalised(x: np.ndarray) -> np.ndarray:
    """Rows as contiguous L2-normalised float32 (zero rows stay zero)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise InvalidInputError(f"expected a (rows, features) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInputError("features contain NaN or infinite values; they cannot be indexed")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0))


def index_kind(n_rows: int) -> str:
    """exact up to ``EXACT_MAX_ROWS`` rows, hnsw beyond."""
    return "exact" if n_rows <= EXACT_MAX_ROWS else "hnsw"


def state_of(hashes: list[str]) -> str:
    """The key of an index: a digest of the sorted image hashes it holds."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()[:32]


def manifest_state(store: FeatureStore, feature_set_id: str, layer: int) -> tuple[str, int]:
    """The key an index of the layer's current rows has, and their number."""
    hashes = store.sql(
        "SELECT image_hash FROM activations WHERE feature_set_id = ? AND layer = ?", [feature_set_id, int(layer)]
    ).column("image_hash")
    return state_of(hashes.to_pylist()), len(hashes)


def _dir(feature_set_id: str, layer: int) -> str:
    return posixpath.join(INDEX_DIR, feature_set_id, str(int(layer)))


def _new_index(kind: str, dim: int) -> Any:
    import faiss

    if kind == "exact":
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def build_index(store: FeatureStore, feature_set_id: str, layer: int, *, batch_rows: int = 65536) -> NeighbourIndex:
    """A fresh index of every stored row of the layer (read in batches), not saved."""
    n = store.sql(
        "SELECT count(*) FROM activations WHERE feature_set_id = ? AND layer = ?", [feature_set_id, int(layer)]
    ).column(0)[0].as_py()  # the size picks the index kind; the key comes from the rows actually read
    if n == 0:
        raise InvalidInputError(
            f"feature set {feature_set_id} has no rows at layer {layer} to search; run `medprobe extract`"
        )
    kind = index_kind(n)
    index: Any = None
    hashes: list[str] = []
    for part, X in store.iter_batches(feature_set_id, layer, batch_rows=batch_rows):
        if index is None:
            index = _new_index(kind, X.shape[1])
        index.add(normalised(X))
        hashes.extend(part)
    return NeighbourIndex(index, hashes, kind, state_of(hashes), built=True)  # keyed by what it holds


def index_checksum(blob: bytes, hashes: bytes) -> str:
    """sha256 over an index's serialised bytes and its row order (what ``<state>.sha256`` holds)."""
    digest = hashlib.sha256(blob)
    digest.update(b"\0")
    digest.update(hashes)
    return digest.hexdigest()


def _save(store: FeatureStore, feature_set_id: str, layer: int, ix: NeighbourIndex) -> None:
    import faiss

    base = posixpath.join(_dir(feature_set_id, layer), ix.state)
    blob, hashes = faiss.serialize_index(ix.index).tobytes(), "\n".join(ix.hashes).encode()
    store.put_bytes(base + ".hashes", hashes)
    store.put_bytes(base + ".faiss", blob)
    store.put_bytes(base + ".sha256", index_checksum(blob, hashes).encode())  # last: what makes it usable


def _read_verified(store: FeatureStore, base: str) -> tuple[bytes, bytes] | str:
    """The index bytes and row order of ``base`` (a path under the store, no suffix), or why they cannot be
    trusted."""
    try:
        blob = store.read_bytes("store:" + base + ".faiss")
        hashes = store.read_bytes("store:" + base + ".hashes")
        expected = store.read_bytes("store:" + base + ".sha256").decode().strip()
    except FileNotFoundError:
        return "its row order or checksum file is missing"
    if index_checksum(blob, hashes) != expected:
        return "its bytes do not match its checksum"
    return blob, hashes


def check_index(store: FeatureStore, base: str) -> str | None:
    """Why the stored index ``base`` cannot be trusted; None when its files are there and match their checksum."""
    got = _read_verified(store, base)
    return got if isinstance(got, str) else None


def _load(store: FeatureStore, feature_set_id: str, layer: int, state: str) -> NeighbourIndex | None:
    import faiss

    base = posixpath.join(_dir(feature_set_id, layer), state)
    if not store.loc.fs.exists(store.loc.path(base + ".faiss")):
        return None
    got = _read_verified(store, base)
    if isinstance(got, str):
        warnings.warn(f"search index {base}.faiss cannot be trusted ({got}); rebuilding it", StoreWarning,
                      stacklevel=3)  # fmt: skip
        return None
    blob, hashes = got[0], got[1].decode().split("\n")
    index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return NeighbourIndex(index, hashes, index_kind(len(hashes)), state, built=False)


def _remove_superseded(store: FeatureStore, feature_set_id: str, layer: int, keep: str) -> None:
    folder = store.loc.path(_dir(feature_set_id, layer))
    try:
        names = store.loc.fs.ls(folder, detail=False)
    except FileNotFoundError:
        return
    for name in names:
        stem = posixpath.basename(str(name)).split(".")[0]
        if stem != keep:
            with contextlib.suppress(FileNotFoundError):
                store.loc.fs.rm(str(name))


def stored_index(store: FeatureStore, feature_set_id: str, layer: int) -> NeighbourIndex:
    """The store's index of the layer: loaded when it matches the current manifest, else built and saved."""
    state, _ = manifest_state(store, feature_set_id, layer)
    loaded = _load(store, feature_set_id, layer, state)
    if loaded is not None:
        return loaded
    ix = build_index(store, feature_set_id, layer)
    try:
        store.check_writable()
    except InvalidInputError:
        return ix  # a read-only store: search with the fresh index, keep nothing
    _save(store, feature_set_id, layer, ix)
    _remove_superseded(store, feature_set_id, layer, ix.state)
    return ix
