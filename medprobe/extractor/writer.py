"""The asynchronous committer: pooled activations -> store segments, on a thread behind a bounded queue.

The forward loop hands each batch's host arrays to :meth:`Committer.put` and goes on; a thread
buffers them and commits one segment per feature set every ``commit_every`` images or
``commit_seconds`` seconds, whichever comes first. The queue holds at most ``max_pending`` batches,
so a slow store slows the loop down instead of filling host memory. Every store write of an
extraction (segments and failures rows) happens on this thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medprobe.errors import MedprobeError
from medprobe.extractor.loader import Failure
from medprobe.featurestore import new_id
from medprobe.schemas import FailureRow

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


@dataclass
class HostBatch:
    """One forwarded batch on the host: ``arrays[feature_set_id][layer]`` is ``(n, hidden)`` float32."""

    image_hashes: list[str]
    arrays: dict[str, dict[int, np.ndarray]]
    failures: list[Failure]


class WriterError(MedprobeError):
    """The committer thread could not write to the store."""


_STOP = object()


class Committer:
    """Background thread that commits buffered batches; ``close()`` commits what is left and joins."""

    def __init__(
        self,
        store: FeatureStore,
        *,
        storage_dtype: str,
        commit_every: int = 256,
        commit_seconds: float = 60.0,
        max_pending: int = 4,
        present: Mapping[str, set[tuple[str, int]]] | None = None,
        run_id: str | None = None,
        dataset: str | None = None,
        on_commit: Callable[[int], None] | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.storage_dtype = storage_dtype
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self.present = present or {}
        self.run_id = run_id
        self.dataset = dataset
        self.on_commit = on_commit
        self.before_commit = before_commit
        self.queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self.error: BaseException | None = None
        self.write_s = 0.0
        self.put_wait_s = 0.0
        self.n_committed = 0  # images committed (all feature sets of a flush)
        self.n_segments = 0
        self.n_failures = 0
        self.failures_by_reason: Counter[str] = Counter()
        self.first_missing: str | None = None  # the first file found missing (a moved folder?)
        self._buffer: list[HostBatch] = []
        self._buffered = 0
        self._first_at: float | None = None
        self._thread = threading.Thread(target=self._loop, name="medprobe-committer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer side
    def put(self, batch: HostBatch) -> None:
        """Queue a batch; blocks while ``max_pending`` batches wait; raises if the thread failed."""
        t0 = time.perf_counter()
        while True:
            self._raise_if_failed()
            try:
                self.queue.put(batch, timeout=0.2)
                break
            except queue.Full:
                continue
        self.put_wait_s += time.perf_counter() - t0

    def close(self) -> None:
        """Commit everything queued and buffered, stop the thread, raise its error if any."""
        while self._thread.is_alive():
            try:
                self.queue.put(_STOP, timeout=0.2)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            e = self.error
            if isinstance(e, MedprobeError):
                raise e
            raise WriterError(f"writing to store {self.store.url} failed: {type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ thread side
    def _loop(self) -> None:
        try:
            while True:
                timeout = None
                if self._first_at is not None:
                    timeout = max(0.0, self._first_at + self.commit_seconds - time.monotonic())
                try:
                    item = self.queue.get(timeout=timeout)
                except queue.Empty:
                    self._flush()
                    continue
                if item is _STOP:
                    self._flush()
                    return
                self._add(item)
        except BaseException as e:  # handed to the producer, which raises it on its thread
            self.error = e
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return

    def _add(self, batch: HostBatch) -> None:
        if batch.failures:
            self._write_failures(batch.failures)
        if not batch.image_hashes:
            return
        self._buffer.append(batch)
        self._buffered += len(batch.image_hashes)
        if self._first_at is None:
            self._first_at = time.monotonic()
        if self._buffered >= self.commit_every or time.monotonic() - self._first_at >= self.commit_seconds:
            self._flush()

    def _write_failures(self, failures: list[Failure]) -> None:
        t0 = time.perf_counter()
        rows = [
            FailureRow(
                failure_id=new_id("fail"),
                stage="extract",
                run_id=self.run_id,
                dataset=self.dataset,
                path=f.uri,
                image_hash=f.image_hash,
                reason=f.reason,
                error=f.error,
            )
            for f in failures
        ]
        self.store.append("failures", rows)
        self.n_failures += len(rows)
        self.failures_by_reason.update(f.reason for f in failures)
        if self.first_missing is None:
            self.first_missing = next((f.uri for f in failures if f.reason == "missing"), None)
        self.write_s += time.perf_counter() - t0

    def _flush(self) -> None:
        if not self._buffer:
            self._first_at = None
            return
        if self.before_commit is not None:
            self.before_commit()
        t0 = time.perf_counter()
        hashes = [h for b in self._buffer for h in b.image_hashes]
        for fs_id in self._buffer[0].arrays:
            layers = sorted(self._buffer[0].arrays[fs_id])
            stacked = {layer: np.concatenate([b.arrays[fs_id][layer] for b in self._buffer]) for layer in layers}
            for rows, want_layers in self._groups(fs_id, hashes, layers):
                sub_hashes = [hashes[i] for i in rows]
                arrays = {layer: stacked[layer][rows] for layer in want_layers}
                self.store.commit_segment(fs_id, sub_hashes, arrays, dtype=self.storage_dtype)
                self.n_segments += 1
        self.n_committed += len(hashes)
        self.write_s += time.perf_counter() - t0
        self._buffer = []
        self._buffered = 0
        self._first_at = None
        if self.on_commit is not None:
            self.on_commit(len(hashes))

    def _groups(self, fs_id: str, hashes: list[str], layers: list[int]) -> list[tuple[np.ndarray, list[int]]]:
        """Rows to commit per set of missing layers: images committed before (a partial run) skip what they have."""
        if not self.present:
            return [(np.arange(len(hashes)), layers)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, h in enumerate(hashes):
            have = self.present.get(h)
            missing = tuple(layers) if not have else tuple(x for x in layers if (fs_id, x) not in have)
            if missing:
                groups.setdefault(missing, []).append(i)
        return [(np.asarray(rows), list(missing)) for missing, rows in groups.items()]
