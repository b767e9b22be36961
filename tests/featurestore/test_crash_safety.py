"""Crash safety: writers killed with SIGKILL at random moments never leave torn or partial data visible."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fs_crash_writer import FEATURE_SET
from fs_helpers import activation, image_hash

from medprobe.featurestore import FeatureStore
from medprobe.featurestore.maintenance import gc_store, verify_store
from medprobe.featurestore.segments import list_segment_dirs

ROUNDS = 11  # 22 kills


WRITER = Path(__file__).with_name("fs_crash_writer.py")


def start_writers(url: str, jobs: list[tuple]) -> list[subprocess.Popen]:
    """Writer subprocesses (see fs_crash_writer.py), one per ``(prefix, n_segments, rows, *extra)``, started at once
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


def _printed_segments(text: str) -> set[str]:
    return {line for line in text.split() if line.startswith("seg-")}


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


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    """ROUNDS x 2 writers at once (concurrent writers too), each killed at its own random moment."""
    url = str(tmp_path / "store")
    rng = random.Random(1234)
    logged: set[str] = set()
    for trial in range(ROUNDS):
        procs = start_writers(url, [(f"r{trial}w{w}-", 0, rng.randint(1, 9)) for w in range(2)])
        started = time.monotonic()
        for at, proc in sorted((rng.uniform(0.0, 0.4), i) for i, _ in enumerate(procs)):
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            procs[proc].kill()  # SIGKILL
        for proc in procs:
            out = finish(proc)
            assert proc.returncode == -9
            logged |= _printed_segments(out)
        _store, committed = check_store(url)
        assert logged <= committed, "a commit that returned is not visible"
    store, committed = check_store(url)
    orphans = set(list_segment_dirs(store.loc)) - committed
    # gc: nothing removed inside the grace period; afterwards only the uncommitted segments go
    kept = gc_store(store, dt.timedelta(hours=1))
    assert kept.removed_segments == [] and kept.kept_recent == len(orphans) and kept.committed == len(committed)
    removed = gc_store(store, dt.timedelta(0))
    assert set(removed.removed_segments) == orphans
    assert set(list_segment_dirs(store.loc)) == committed
    check_store(url)
    assert len(committed) >= ROUNDS // 2, "the writers hardly committed anything: the test would not test much"


def test_gc_keeps_committed_and_recent_segments(tmp_path):
    from medprobe.featurestore.segments import write_segment

    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    store.register_feature_set(FEATURE_SET)
    hashes = [image_hash(i) for i in range(3)]
    arrays = {0: np.ones((3, 8))}
    committed = store.commit_segment(FEATURE_SET.feature_set_id, hashes, arrays)
    write_segment(store.loc, "seg-20000101T000000000000-000000000000", FEATURE_SET.feature_set_id, hashes, arrays)
    fresh = "seg-29990101T000000000000-000000000000"  # an id from the future: a writer still at work
    write_segment(store.loc, fresh, FEATURE_SET.feature_set_id, hashes, arrays)
    stale_tmp = Path(url, "tables", "activations", ".seg-x.parquet.123.tmp")
    stale_tmp.write_bytes(b"partial")
    old = "seg-20000101T000000000000-000000000000"  # an old id, but its files were just written: age = the younger
    rep = gc_store(store, dt.timedelta(hours=24))
    assert rep.removed_segments == [] and rep.kept_recent == 2 and rep.committed == 1 and stale_tmp.exists()
    dry = gc_store(store, dt.timedelta(0), dry_run=True)
    assert dry.removed_segments == [old] and set(list_segment_dirs(store.loc)) == {committed, fresh, old}
    rep = gc_store(store, dt.timedelta(0))
    assert rep.removed_segments == [old] and set(list_segment_dirs(store.loc)) == {committed, fresh}
    assert rep.removed_temp_files and not stale_tmp.exists()
    np.testing.assert_array_equal(store.read(FEATURE_SET.feature_set_id, 0, hashes), np.ones((3, 8), np.float16))
