"""The long-running worker: claims shards from the job queue and extracts them until stopped."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medprobe.engines.jobs import Claim, ClaimLost, Heartbeat, JobQueue
from medprobe.engines.shards import ShardRunner
from medprobe.errors import MedprobeError
from medprobe.extractor.pipeline import (
    Stopped,
    check_writable,
)
from medprobe.featurestore import new_id

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    worker_id: str
    shards_done: int = 0
    images_committed: int = 0
    failures: int = 0
    jobs_failed: list[str] = field(default_factory=list)
    stopped: bool = False


def run_worker(
    store: FeatureStore,
    *,
    stop: threading.Event,
    poll_s: float = 5.0,
    heartbeat_s: float = 10.0,
    stale_s: float = 120.0,
    exit_when_idle: bool = False,
    show_progress: bool = True,
    echo: Callable[[str], object] = print,
) -> WorkerStats:
    """Run queued shards until ``stop`` is set (or, with ``exit_when_idle``, until none is left).

    On ``stop`` the in-flight batches are committed, the shard is released for the next worker and
    this returns. A shard whose worker died is taken over once its heartbeat is ``stale_s`` old.
    """
    check_writable(store)
    queue = JobQueue(store, stale_s=stale_s)
    runner = ShardRunner()  # this worker's model stays loaded across the shards it claims
    stats = WorkerStats(worker_id=f"{socket.gethostname()}-{os.getpid()}-{new_id()[-12:]}")
    while not stop.is_set():
        claim = queue.claim_next(stats.worker_id)
        if claim is None:
            if exit_when_idle:
                break
            stop.wait(poll_s)
            continue
        echo(f"worker {stats.worker_id}: job {claim.job.job_id} shard {claim.shard + 1}/{claim.job.n_shards}")
        try:
            summary = _run_shard(store, claim, runner, stop=stop, heartbeat_s=heartbeat_s, show=show_progress)
        except Stopped as s:
            claim.release()
            stats.stopped = True
            stats.images_committed += s.args[0].get("images_committed", 0)
            break
        except ClaimLost as e:
            echo(f"worker {stats.worker_id}: {e}")
            continue
        except MedprobeError as e:
            queue.fail(claim.job.job_id, str(e), stats.worker_id)
            claim.release()
            stats.jobs_failed.append(claim.job.job_id)
            echo(f"worker {stats.worker_id}: job {claim.job.job_id} failed: {e}")
            continue
        claim.finish(summary)
        stats.shards_done += 1
        stats.images_committed += summary["images_committed"]
        stats.failures += summary["failures"]
    stats.stopped = stats.stopped or stop.is_set()
    return stats


def _run_shard(
    store: FeatureStore, claim: Claim, runner: ShardRunner, *, stop: threading.Event, heartbeat_s: float, show: bool
) -> dict[str, Any]:
    """The claimed shard through the engines' shard runner, with the claim's heartbeat and ownership checks."""

    started = time.monotonic()
    committed = 0
    with Heartbeat(claim, heartbeat_s) as hb:

        def on_start(run_id: str, plan: Any) -> None:
            hb.update(images_todo=plan.n_todo, images_skipped=plan.n_complete, images_committed=0, run_id=run_id)
            claim.beat(**hb.progress)

        def on_commit(n: int) -> None:
            nonlocal committed
            committed += n
            elapsed = max(1e-9, time.monotonic() - started)
            hb.update(images_committed=committed, images_per_s=round(committed / elapsed, 2))

        def before_commit() -> None:
            if isinstance(hb.error, ClaimLost):
                raise hb.error
            claim.check_owner()

        return runner.run(
            store, claim.job.options, claim.shard, claim.job.n_shards, "worker",
            stop=stop, on_commit=on_commit, before_commit=before_commit, on_start=on_start, show_progress=show,
            run_params={"job_id": claim.job.job_id},
        )  # fmt: skip
