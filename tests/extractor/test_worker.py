"""The job queue and `medprobe worker`: exclusive shard claims, stale takeover, two workers, SIGTERM."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from medprobe.cli.main import build_app
from medprobe.engines.jobs import ClaimLost, JobQueue
from medprobe.extractor.pipeline import ExtractOptions
from medprobe.extractor.plan import shard_of
from medprobe.featurestore import FeatureStore
from medprobe.featurestore.fragments import list_fragments
from tests.helpers.datasets import make_dataset

CLI = [sys.executable, "-m", "medprobe.cli.main"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _options(**kw) -> ExtractOptions:
    base = {"dataset": "toy", "model": "tiny-random/clip", "workers": 0, "batch_size": 2, "commit_every": 8}
    return ExtractOptions(**{**base, **kw})


def _row_counts(store) -> tuple[int, int]:
    """(distinct (feature set, layer, image) keys, keys written more than once)."""
    t = store.sql(
        "SELECT count(*) AS keys, count(*) FILTER (WHERE n > 1) AS dup FROM "
        "(SELECT feature_set_id, layer, image_hash, count(*) AS n FROM raw_activations GROUP BY ALL)"
    )
    return t.column("keys")[0].as_py(), t.column("dup")[0].as_py()


def test_shards_partition_images_and_claims_are_exclusive(tmp_path):
    store = FeatureStore.open(str(tmp_path / "store"))
    hashes = [f"{i:064x}" for i in range(0, 10**6, 997)]
    assert sorted(h for k in range(5) for h in hashes if shard_of(h, 5) == k) == sorted(hashes)
    queue = JobQueue(store)
    job = queue.submit(_options(), n_shards=3)
    with multiprocessing.get_context("fork").Pool(4) as pool:  # separate processes, as real workers are
        claims = [c for got in pool.map(_grab_all, [(store.url, f"w{i}") for i in range(4)]) for c in got]
    assert sorted(claims) == [(0, 0), (1, 0), (2, 0)]  # each shard won by exactly one of four racing workers
    assert [s.state for s in queue.shards(job)] == ["running"] * 3


def _grab_all(args: tuple[str, str]) -> list[tuple[int, int]]:
    url, worker = args
    queue = JobQueue(FeatureStore.open(url))
    got = []
    while (claim := queue.claim_next(worker)) is not None:
        got.append((claim.shard, claim.gen))
    return got


def test_a_stale_claim_is_taken_over_and_its_owner_stops(tmp_path):
    store = FeatureStore.open(str(tmp_path / "store"))
    queue = JobQueue(store, stale_s=30)
    queue.submit(_options(), n_shards=1)
    first = queue.claim_next("dead-worker")
    assert queue.claim_next("other") is None  # fresh heartbeat: nothing to take
    first.body["heartbeat_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)).isoformat()
    queue.files.write_atomic(first.path, json.dumps(first.body).encode())
    second = queue.claim_next("other")
    assert second is not None and second.gen == 1 and second.shard == 0
    with pytest.raises(ClaimLost, match="taken over"):
        first.check_owner()
    second.check_owner()


def test_two_workers_share_one_job_without_duplicate_rows(tmp_path):
    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    make_dataset(store, "toy", tmp_path / "img", 60, broken=1)
    JobQueue(store).submit(_options(pooling=["cls", "mean"], batch_size=4), n_shards=4)
    cmd = [*CLI, "worker", "--store", url, "--exit-when-idle", "--no-progress", "--heartbeat", "1"]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_o, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e.decode()[-2000:]
    store.refresh()
    keys, dup = _row_counts(store)
    assert keys == 60 * 2 * 2 and dup == 0
    queue = JobQueue(store)
    (job_id,) = queue.job_ids()
    shards = queue.shards(queue.job(job_id))
    assert [s.state for s in shards] == ["done"] * 4
    assert sum(s.done["summary"]["images_committed"] for s in shards) == 60
    assert sum(s.done["summary"]["failures"] for s in shards) == 1
    status = CliRunner().invoke(build_app(), ["status", "--store", url], catch_exceptions=False)
    assert status.exit_code == 0 and "4/4" in status.output and "done" in status.output


def test_sigterm_commits_the_batch_in_flight_and_releases_the_shard(tmp_path):
    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    make_dataset(store, "toy", tmp_path / "img", 150)
    queue = JobQueue(store)
    queue.submit(_options(batch_size=1, commit_every=5), n_shards=1)
    proc = subprocess.Popen(
        [*CLI, "worker", "--store", url, "--no-progress", "--poll", "0.2"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list_fragments(store.loc, "activations") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)  # wait for the first segment: the worker is extracting
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    store.refresh()
    run = store.sql("SELECT status, summary FROM runs WHERE kind = 'extract'").to_pylist()
    assert [r["status"] for r in run] == ["interrupted"]
    summary = json.loads(run[0]["summary"])
    assert summary["stopped"] and 0 < summary["images_committed"] < 150
    # everything forwarded before the stop was committed, including the partial buffer
    assert summary["images_committed"] == summary["images_forwarded"]
    keys, dup = _row_counts(store)
    assert keys == summary["images_committed"] * 2 and dup == 0  # 1 pooling x 2 layers
    (state,) = queue.shards(queue.job(queue.job_ids()[0]))
    assert state.state == "released"
    # the next worker takes the released shard at once and finishes it
    rest = subprocess.run(
        [*CLI, "worker", "--store", url, "--exit-when-idle", "--no-progress"],
        env=ENV, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert rest.returncode == 0, rest.stderr[-2000:]
    store.refresh()
    assert _row_counts(store) == (150 * 2, 0)
