"""store compact: many fragments become one atomically; queries answer the same; gc removes the replaced files;
quarantine still hides a broken segment whose manifest rows were compacted."""

from __future__ import annotations

import datetime as dt
import json
import posixpath

import numpy as np
import pytest

from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore, gc_store
from medprobe.featurestore.fragments import TXN_PREFIX, append_fragment, list_fragments, to_arrow
from medprobe.featurestore.maintenance import compact_table, quarantine, verify_store
from medprobe.schemas import FailureRow
from tests.helpers.cli import run_cli
from tests.helpers.features import fill_store

ALL = ["images", "datasets", "tasks", "dataset_images", "feature_sets", "activations", "failures", "runs"]


def _snapshot(store: FeatureStore) -> dict[str, list]:
    store.refresh()
    return {t: sorted(map(str, store.sql(f"SELECT * FROM {t}").to_pylist())) for t in ALL} | {
        f"raw_{t}": store.sql(f"SELECT count(*) FROM raw_{t}").column(0)[0].as_py() for t in ALL
    }


def test_compaction_keeps_every_answer_and_gc_removes_the_replaced_files(tmp_path, capsys) -> None:
    store = FeatureStore.open(str(tmp_path / "s"), create=True)
    fill_store(store, n=60, layers=3, dim=8)
    for i in range(20):
        store.append("failures", [FailureRow(failure_id=f"f{i}", stage="extract", reason="x", error="e")])
    fill_store(store, n=60, layers=3, dim=8, fs_id="fs-two", model_id="m2", seed=3)
    before = _snapshot(store)
    X = store.read("fs-synth", 1)
    n_before = len(list_fragments(store.loc, "failures"))
    code, out, err = run_cli(capsys, "store", "compact", "--min-fragments", "2", "-f", "json", "--store", store.url)
    assert code == 0, err
    doc = {r["table"]: r for r in json.loads(out)["tables"]}
    assert doc["failures"]["fragments_before"] == n_before >= 20 and doc["failures"]["fragments_after"] == 1
    reopened = FeatureStore.open(store.url, create=False)  # a fresh reader sees the compacted store
    assert _snapshot(reopened) == before
    np.testing.assert_array_equal(reopened.read("fs-synth", 1), X)
    assert len(reopened.catalog.fragment_files("activations")) == 1
    # the replaced files stay until gc, and gc removes them only after its grace period
    assert len(list_fragments(store.loc, "failures")) == n_before + 1
    kept = gc_store(reopened, dt.timedelta(hours=1))
    assert kept.removed_superseded == []
    gone = gc_store(reopened, dt.timedelta(0), min_grace=dt.timedelta(0))
    assert len(gone.removed_superseded) >= n_before and len(list_fragments(store.loc, "failures")) == 1
    assert _snapshot(FeatureStore.open(store.url, create=False)) == before
    # appends after a compaction show beside the compacted rows; a second compaction takes both
    reopened.append("failures", [FailureRow(failure_id="late", stage="extract", reason="x", error="e")])
    assert reopened.sql("SELECT count(*) FROM failures").column(0)[0].as_py() == 21
    compact_table(reopened, "failures", min_fragments=2)
    assert reopened.sql("SELECT count(*) FROM failures").column(0)[0].as_py() == 21


def test_an_unfinished_compaction_changes_nothing(tmp_path) -> None:
    store = FeatureStore.open(str(tmp_path / "s"), create=True)
    for i in range(5):
        store.append("failures", [FailureRow(failure_id=f"f{i}", stage="extract", reason="x", error="e")])
    rows = store.sql("SELECT * FROM failures ORDER BY failure_id").to_pylist()
    # a compaction killed after writing its fragment, before its commit marker
    data = store.sql("SELECT * FROM raw_failures")
    append_fragment(store.loc, "failures", to_arrow("failures", data), name=f"{TXN_PREFIX}txn-dead--x")
    again = FeatureStore.open(store.url, create=False)
    assert again.sql("SELECT * FROM failures ORDER BY failure_id").to_pylist() == rows
    assert len(again.catalog.fragment_files("failures")) == 5


def test_compaction_is_one_at_a_time(tmp_path) -> None:
    store = FeatureStore.open(str(tmp_path / "s"), create=True)
    store.loc.fs.makedirs(store.loc.path("locks"), exist_ok=True)
    store.loc.fs.pipe(store.loc.path("locks/compact-failures.lock"), b"{}")
    with pytest.raises(InvalidInputError, match="another compaction of failures"):
        compact_table(store, "failures", min_fragments=1)


def test_quarantine_after_compaction_hides_the_broken_segment(tmp_path) -> None:
    store = FeatureStore.open(str(tmp_path / "s"), create=True)
    fill_store(store, n=30, layers=2, dim=8)
    fill_store(store, n=30, layers=2, dim=8, fs_id="fs-two", model_id="m2", seed=3)
    compact_table(store, "activations", min_fragments=2)
    segs = store.sql("SELECT DISTINCT segment_id, feature_set_id FROM activations ORDER BY 1").to_pylist()
    broken = next(s["segment_id"] for s in segs if s["feature_set_id"] == "fs-two")
    files = store.loc.fs.find(store.loc.path("segments", broken))
    arrays = [p for p in files if posixpath.basename(p).startswith("c.")]
    store.loc.fs.rm(arrays[0])  # a chunk of that segment is lost
    report = verify_store(store)
    assert broken in report.broken_segments
    rep = quarantine(store, report)
    fresh = FeatureStore.open(store.url, create=False)
    left = fresh.sql("SELECT DISTINCT feature_set_id FROM activations").column(0).to_pylist()
    assert left == ["fs-synth"] and rep.rows_hidden > 0
    kept = store.loc.fs.ls(store.loc.path("quarantine", "activations"))
    assert any(posixpath.basename(k).endswith("-excluded.parquet") for k in kept)  # moved aside, not deleted


def test_gc_removes_the_half_written_blob_of_a_killed_copy_and_keeps_blobs(tmp_path) -> None:
    import os

    store = FeatureStore.open(str(tmp_path / "s"), create=True)
    kept = store.put_bytes("blobs/images/ab/" + "ab" * 32 + ".png", b"png bytes")
    folder = tmp_path / "s" / "blobs" / "images" / "cd"
    folder.mkdir(parents=True)
    half = folder / f".{'cd' * 32}.png.4242-deadbeef.tmp"  # what a killed `ingest --copy` leaves behind
    half.write_bytes(b"half")
    old = dt.datetime.now().timestamp() - 2 * 3600
    os.utime(half, (old, old))
    young = folder / f".{'ce' * 32}.png.4243-deadbeef.tmp"  # a live writer's: younger than the grace period
    young.write_bytes(b"writing")
    report = gc_store(store, dt.timedelta(hours=1))
    assert [os.path.basename(p) for p in report.removed_temp_files] == [half.name]
    assert not half.exists() and young.exists() and store.read_bytes(kept) == b"png bytes"
