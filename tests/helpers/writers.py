"""Starting, finishing and checking writer subprocesses (``crash_writer.py``) for the crash and concurrency tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from medprobe.featurestore import FeatureStore
from medprobe.featurestore.maintenance import verify_store
from tests.helpers.crash_writer import FEATURE_SET
from tests.helpers.features import activation

WRITER = Path(__file__).with_name("crash_writer.py")


def start_writers(url: str, jobs: list[tuple]) -> list[subprocess.Popen]:
    """Writer subprocesses (see crash_writer.py), one per ``(prefix, n_segments, rows, *extra)``, started at once
    and returned when each has opened the store and printed ``ready``."""
    procs = [
        subprocess.Popen([sys.executable, str(WRITER), url, *map(str, job)], stdout=subprocess.PIPE, text=True)
        for job in jobs
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return procs


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    """Wait for a writer and return what it printed after ``ready``.

    (Not ``communicate(timeout=...)``: it reads the pipe's fd directly and would drop lines that ``readline``
    already buffered.)
    """
    proc.wait(timeout)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    return out


def check_store(url: str) -> tuple[FeatureStore, set[str]]:
    """verify passes, every visible row reads back bit-exact, manifest rows == rows written; returns committed ids."""
    store = FeatureStore.open(url)
    report = verify_store(store)
    assert report.ok, report.problems
    visible = store.table("activations")
    assert (
        visible.num_rows == store.sql("SELECT count(DISTINCT (layer, image_hash)) FROM raw_activations")[0][0].as_py()
    )
    for layer, hidden in enumerate(FEATURE_SET.hidden_sizes):
        hashes = visible.filter(visible["layer"].to_numpy() == layer).column("image_hash").to_pylist()
        if hashes:
            want = np.stack([activation(h, layer, hidden) for h in hashes]).astype(np.float16)
            np.testing.assert_array_equal(store.read(FEATURE_SET.feature_set_id, layer, hashes), want)
    per_segment = store.sql("SELECT segment_id, count(*) AS n FROM raw_activations GROUP BY segment_id")
    for sid, n in zip(*(per_segment.column(c).to_pylist() for c in ("segment_id", "n")), strict=True):
        attrs = store.segments.attrs(sid)  # nothing half-written: the manifest covers exactly what was written
        assert n == attrs["n_rows"] * len(attrs["layers"]) == attrs["n_rows"] * len(FEATURE_SET.hidden_sizes)
    return store, set(per_segment.column("segment_id").to_pylist())
