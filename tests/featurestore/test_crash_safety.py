"""Crash safety: writers killed with SIGKILL at random moments never leave torn or partial data visible."""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path

import numpy as np
import pytest

from medprobe.errors import CorruptDataError, InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.featurestore.maintenance import gc_store, verify_store
from medprobe.featurestore.segments import list_segment_dirs, segment_path
from tests.helpers.crash_writer import FEATURE_SET
from tests.helpers.features import activation, image_hash
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
    removed = gc_store(store, dt.timedelta(0), min_grace=dt.timedelta(0))
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
    dry = gc_store(store, dt.timedelta(0), dry_run=True, min_grace=dt.timedelta(0))
    assert dry.removed_segments == [old] and set(list_segment_dirs(store.loc)) == {committed, fresh, old}
    rep = gc_store(store, dt.timedelta(0), min_grace=dt.timedelta(0))
    assert rep.removed_segments == [old] and set(list_segment_dirs(store.loc)) == {committed, fresh}
    assert rep.removed_temp_files and not stale_tmp.exists()
    np.testing.assert_array_equal(store.read(FEATURE_SET.feature_set_id, 0, hashes), np.ones((3, 8), np.float16))


def test_a_segment_removed_before_its_commit_fails_the_commit_loudly(tmp_path, monkeypatch):
    """gc (or anything) removing a segment between its write and its manifest: the commit refuses, nothing shows."""
    import shutil

    from medprobe.featurestore import store as store_module

    store = FeatureStore.open(str(tmp_path / "store"))
    store.register_feature_set(FEATURE_SET)
    real_write = store_module.write_segment

    def write_then_lose(loc, segment_id, *args, **kwargs):
        real_write(loc, segment_id, *args, **kwargs)
        shutil.rmtree(segment_path(loc, segment_id))  # what `gc --grace 0s` did to a live writer

    monkeypatch.setattr(store_module, "write_segment", write_then_lose)
    hashes = [image_hash(i) for i in range(4)]
    arrays = {x: np.stack([activation(h, x, d) for h in hashes]) for x, d in enumerate(FEATURE_SET.hidden_sizes)}
    with pytest.raises(CorruptDataError, match="not whole"):
        store.commit_segment(FEATURE_SET.feature_set_id, hashes, arrays)
    assert store.sql("SELECT count(*) FROM raw_activations")[0][0].as_py() == 0
    assert verify_store(store).ok


def test_gc_refuses_a_grace_a_live_writer_could_fall_into(tmp_path):
    store = FeatureStore.open(str(tmp_path / "store"))
    with pytest.raises(InvalidInputError, match="minimum 15m"):
        gc_store(store, dt.timedelta(minutes=5))
