"""One ingest at a time per dataset: a lock file in the store, taken atomically, released at the end.

Two ingests into one dataset would each generate splits without seeing the other's patients (leaking them across
train and test) and could commit two different task definitions. The second one is refused and told who holds the
lock. A lock whose process is gone (same host, pid not alive) is taken over; one from another host is trusted until
it is ``STALE_AFTER`` old.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from medprobe.errors import MedprobeError
from medprobe.featurestore import process_gone

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

LOCKS = "locks"
STALE_AFTER = dt.timedelta(hours=12)


class DatasetBusyError(MedprobeError):
    """Another process is changing the dataset."""


def _abandoned(holder: dict[str, Any]) -> bool:
    """True when the lock's holder is certainly gone: its pid is dead on this host, or the lock is very old."""
    since = dt.datetime.fromisoformat(holder.get("since", "1970-01-01T00:00:00+00:00"))
    if dt.datetime.now(dt.UTC) - since > STALE_AFTER:
        return True
    return process_gone(holder.get("host"), holder.get("pid"))


@contextmanager
def dataset_lock(store: FeatureStore, dataset: str) -> Iterator[None]:
    """Hold the dataset's ingest lock for the block; DatasetBusyError names the holder when it is taken."""
    area = store.file_area(LOCKS)
    name = f"ingest-{dataset.encode().hex()}.json"  # any dataset name becomes a safe file name
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": dt.datetime.now(dt.UTC).isoformat()}
    body = json.dumps(me).encode()
    for _ in range(3):
        if area.create_exclusive(name, body):
            break
        raw = area.read(name)
        if raw is None:
            continue  # released meanwhile: try again
        holder = json.loads(raw) if raw else {}
        if not _abandoned(holder):
            raise DatasetBusyError(
                f"dataset {dataset!r} is being changed by another ingest (pid {holder.get('pid')} on "
                f"{holder.get('host')}, since {holder.get('since')}); wait for it to finish and run this again"
            )
        if area.take_over(name, raw, body):  # the holder died without releasing it; one taker wins
            break
    else:
        raise DatasetBusyError(f"dataset {dataset!r}: could not take its ingest lock; run this again")
    try:
        yield
    finally:
        area.remove(name)
