"""Crash safety: writers killed with SIGKILL at random moments never leave torn or partial data visible."""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path

import numpy as np

from medprobe.featurestore import FeatureStore
from medprobe.featurestore.maintenance import gc_store
from medprobe.featurestore.segments import list_segment_dirs
from tests.helpers.crash_writer import FEATURE_SET
from tests.helpers.features import image_hash
from tests.helpers.writers import check_store, finish, start_writers

ROUNDS = 11  # 22 kills


def _printed_segments(text: str) -> set[str]:
    return {line for line in text.split() if line.startswith("seg-")}


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
