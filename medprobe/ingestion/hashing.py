"""Parallel hashing and inspection of source images, with a progress bar and bounded memory.

Each record is read once: sha256 of the file bytes (the image's identity), then ``inspect_image`` on the same
bytes. Work runs on a thread pool (hashlib, file reads, zlib and PIL's decoders release the GIL); at most
``window`` records are in flight, so memory is bounded by ``window`` x the largest file, whatever the number of
files. Records with pixel arrays instead of files (MedMNIST, PanNuke) are PNG-encoded first.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from medprobe.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    ImageReadError,
    Verify,
    blob_path,
    inspect_image,
    read_file_bytes,
)
from medprobe.ingestion.records import SourceRecord
from medprobe.progress import progress_bar
from medprobe.schemas import ImageRow

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore



@dataclass(frozen=True, slots=True)
class Probe:
    """What reading one record gave: its hash and image facts, or why it failed."""

    image_hash: str | None = None
    n_bytes: int = 0
    info: ImageInfo | None = None
    uri: str | None = None  # where the image bytes live (the source file, or store:blobs/... when copied)
    in_store: bool = False
    reason: str | None = None  # failure category when the record could not be used
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_uint8_pixels(pixels: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 3) array as uint8: uint8/uint16 kept, float data in 0..255 rounded."""
    arr = np.asarray(pixels)
    if arr.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        values = arr.astype(np.float64)
        if not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 255:
            raise ValueError(f"pixel values outside 0..255 (dtype {arr.dtype}); scale them before ingesting")
        return np.rint(values).astype(np.uint8)
    raise ValueError(f"pixel array of dtype {arr.dtype} cannot be an image")


def encode_png(pixels: np.ndarray) -> tuple[bytes, ImageInfo]:
    """Deterministic PNG bytes of a pixel array (grayscale, RGB or 16-bit grayscale)."""
    arr = to_uint8_pixels(pixels)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"pixel array of shape {arr.shape} is not (H, W), (H, W, 3) or (H, W, 4)")
    img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    bits = 16 if arr.dtype == np.uint16 else 8
    return buf.getvalue(), ImageInfo(img.size[0], img.size[1], img.mode, bits, "PNG")


class BlobSink:
    """Copies image bytes into the store once per hash (thread-safe); skips hashes the store already has."""

    def __init__(self, store: FeatureStore, known_hashes: set[str]) -> None:
        self.store = store
        self.known = known_hashes
        self._claimed: set[str] = set()
        self._lock = threading.Lock()

    def put(self, image_hash: str, fmt: str, data: bytes) -> str | None:
        """``store:`` URI of the copy, or None when the store already had (or another thread is writing) it."""
        with self._lock:
            if image_hash in self.known or image_hash in self._claimed:
                return None
            self._claimed.add(image_hash)
        return self.store.put_bytes(blob_path(image_hash, fmt), data)


def probe_record(
    record: SourceRecord,
    *,
    verify: Verify | str = Verify.structure,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    copy: bool = False,
    sink: BlobSink | None = None,
) -> Probe:
    """Read, hash and inspect one record; every failure becomes a Probe with a reason (never raises)."""
    source = record.uri or record.source_path
    try:
        if record.pixels is not None:
            try:
                data, info = encode_png(record.pixels)
            except ValueError as e:
                return Probe(reason="corrupt", error=str(e))
            copy = True
        elif record.data is not None:
            data, copy = record.data, True  # embedded bytes: the store keeps them
        else:
            data = read_file_bytes(record.uri or "")
        digest = sha256_hex(data)
        if record.expected_sha256 and record.expected_sha256 != digest:
            return Probe(
                image_hash=digest,
                n_bytes=len(data),
                reason="hash_mismatch",
                error=f"{source}: sha256 {digest} differs from the manifest's {record.expected_sha256}",
            )
        if record.pixels is None:
            info = inspect_image(data, source=source, verify=verify, max_pixels=max_pixels)
    except ImageReadError as e:
        return Probe(reason=e.reason, error=str(e))
    uri, in_store = record.uri, False
    if copy and sink is not None:
        copied = sink.put(digest, info.format, data)
        if copied is not None:
            uri, in_store = copied, True
        elif record.pixels is not None or record.data is not None:
            uri, in_store = "store:" + blob_path(digest, info.format), True
    return Probe(image_hash=digest, n_bytes=len(data), info=info, uri=uri, in_store=in_store)


def add_images(
    store: FeatureStore, records: Sequence[SourceRecord], *, known: set[str], copy: bool = False,
    verify: Verify | str = Verify.structure, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None,
    show_progress: bool = False,
) -> list[Probe]:
    """The one way images enter the store (collections and VQA items alike): every record read, hashed (sha256)
    and checked on a thread pool, its bytes copied into the store's blobs when asked (always for arrays and
    embedded bytes, once per hash: ``known`` holds the hashes the store already has). Returns one probe per record,
    in order; a failure is a probe with a reason, never an exception. The caller writes the rows
    (:func:`image_row`) with its own transaction."""
    sink = BlobSink(store, known)
    work = partial(probe_record, verify=verify, max_pixels=max_pixels, copy=copy, sink=sink)
    return list(parallel_map(work, records, workers=workers, show_progress=show_progress))


def image_row(probe: Probe, record: SourceRecord) -> ImageRow:
    """The ``images`` row of a record that probed ok."""
    info = probe.info
    if probe.image_hash is None or info is None:
        raise ValueError(f"{record.source_path}: only an image that was read can become an images row")
    return ImageRow(
        image_hash=probe.image_hash, uri=probe.uri or record.uri or record.source_path, in_store=probe.in_store,
        width=info.width, height=info.height, mode=info.mode, bit_depth=info.bit_depth, format=info.format,
        n_bytes=probe.n_bytes,
    )  # fmt: skip


def parallel_map(
    fn: Callable[[SourceRecord], Probe],
    records: Sequence[SourceRecord],
    *,
    workers: int | None = None,
    window: int | None = None,
    description: str = "hashing",
    show_progress: bool = True,
) -> Iterator[Probe]:
    """``fn`` over ``records`` on a thread pool, results in input order, at most ``window`` in flight."""
    workers = max(1, workers or os.cpu_count() or 1)
    window = max(workers, window or 4 * workers)
    done_bytes = 0
    lock = threading.Lock()
    with progress_bar("files", disable=not show_progress) as bar:
        task = bar.add_task(description, total=len(records))

        def finished(f: Future) -> None:
            nonlocal done_bytes
            if f.cancelled() or f.exception() is not None:
                return
            with lock:
                done_bytes += f.result().n_bytes
                mb = done_bytes / 1e6
            bar.update(task, advance=1, description=f"{description} ({mb:,.0f} MB)")

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medprobe-hash") as pool:
            pending: deque[Future] = deque()
            for record in records:
                if len(pending) >= window:
                    yield pending.popleft().result()
                fut = pool.submit(fn, record)
                fut.add_done_callback(finished)
                pending.append(fut)
            while pending:
                yield pending.popleft().result()
