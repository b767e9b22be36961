"""The extraction queue: job files in ``<store>/jobs/``, split into fixed shards that workers claim exclusively.

Layout (every file JSON)::

    jobs/<job_id>/job.json               the ExtractOptions and the shard count (written once)
    jobs/<job_id>/claims/<k>.<gen>.json  worker ``gen`` of shard k; its owner rewrites it as a heartbeat
    jobs/<job_id>/done/<k>.json          shard k finished (its run summary)
    jobs/<job_id>/failed.json            the job cannot run (unknown model, bad layer spec, ...)

Image ``h`` belongs to shard ``int(h[:8], 16) % n_shards``, so shards never overlap and two workers never
extract the same image. A claim is a file created exclusively (``featurestore.exclusive.create_exclusive``: O_EXCL
on local folders, a conditional PUT on S3); a claim whose heartbeat is older than ``stale_s`` (or that its owner
released on shutdown) is taken over by creating generation ``gen + 1`` the same way, so exactly one worker wins each
shard. A store that cannot create files exclusively is refused (``StoreWriteError``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medprobe.errors import MedprobeError, NotFoundError
from medprobe.extractor.pipeline import ExtractOptions
from medprobe.featurestore import new_id
from medprobe.schemas import utcnow

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

JOBS_DIR = "jobs"
DEFAULT_SHARDS = 16
DEFAULT_STALE_S = 120.0


class ClaimLost(MedprobeError):
    """Another worker took over this shard (our heartbeat went stale); stop without committing."""


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, default=str).encode()


def _now() -> dt.datetime:
    return utcnow()


@dataclass
class Job:
    job_id: str
    options: ExtractOptions
    n_shards: int
    created_at: str


@dataclass
class ShardState:
    shard: int
    state: str  # pending | running | stale | released | done
    claim: dict[str, Any] | None = None
    done: dict[str, Any] | None = None


@dataclass
class Claim:
    """A shard this worker owns; ``beat()`` rewrites the claim file with fresh progress."""

    queue: JobQueue
    job: Job
    shard: int
    gen: int
    worker_id: str
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.queue.claim_path(self.job.job_id, self.shard, self.gen)

    def beat(self, **progress: Any) -> None:
        """Heartbeat: rewrite the claim with the time and ``progress`` (only while we still own it)."""
        self.body.update(progress, heartbeat_at=_now().isoformat())
        self.queue.files.write_atomic(self.path, _dump(self.body))

    def check_owner(self) -> None:
        """Raise ClaimLost when a later generation of this shard's claim exists."""
        latest = self.queue.latest_claim(self.job.job_id, self.shard)
        if latest is not None and latest[0] > self.gen:
            raise ClaimLost(
                f"shard {self.shard} of job {self.job.job_id} was taken over by worker {latest[1].get('worker')} "
                "after this worker's heartbeat went stale"
            )

    def release(self) -> None:
        """Give the shard back (graceful shutdown): the next worker claims it at once."""
        self.beat(released=True)

    def finish(self, summary: dict[str, Any]) -> None:
        body = {"worker": self.worker_id, "gen": self.gen, "finished_at": _now().isoformat(), "summary": summary}
        self.queue.files.create_exclusive(self.queue.done_path(self.job.job_id, self.shard), _dump(body))


class JobQueue:
    """Jobs of one store."""

    def __init__(self, store: FeatureStore, *, stale_s: float = DEFAULT_STALE_S) -> None:
        self.store = store
        self.files = store.file_area(JOBS_DIR)
        self.stale_s = stale_s

    # ------------------------------------------------------------------ paths
    def job_dir(self, job_id: str) -> str:
        return job_id

    def claim_path(self, job_id: str, shard: int, gen: int) -> str:
        return posixpath.join(self.job_dir(job_id), "claims", f"{shard:05d}.{gen:05d}.json")

    def done_path(self, job_id: str, shard: int) -> str:
        return posixpath.join(self.job_dir(job_id), "done", f"{shard:05d}.json")

    def _read_json(self, path: str) -> dict[str, Any] | None:
        data = self.files.read(path)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None  # a claim is written atomically; an unparsable file is not ours to trust

    # ------------------------------------------------------------------ jobs
    def submit(self, options: ExtractOptions, *, n_shards: int = DEFAULT_SHARDS) -> Job:
        """Queue an extraction; returns the job (its id sorts by submission time)."""
        job = Job(job_id=new_id("job"), options=options, n_shards=n_shards, created_at=_now().isoformat())
        body = {
            "job_id": job.job_id,
            "options": options.model_dump(),
            "n_shards": n_shards,
            "created_at": job.created_at,
            "submitted_by": f"{socket.gethostname()}:{os.getpid()}",
        }
        self.files.create_exclusive(posixpath.join(self.job_dir(job.job_id), "job.json"), _dump(body))
        return job

    def job_ids(self) -> list[str]:
        return sorted(name for name, kind in self.files.entries() if kind == "directory")

    def job(self, job_id: str) -> Job:
        body = self._read_json(posixpath.join(self.job_dir(job_id), "job.json"))
        if body is None:
            raise NotFoundError(f"no job {job_id!r} in {self.store.url}; known: {', '.join(self.job_ids()) or 'none'}")
        return Job(
            job_id=body["job_id"],
            options=ExtractOptions(**body["options"]),
            n_shards=int(body["n_shards"]),
            created_at=body["created_at"],
        )

    def failure(self, job_id: str) -> dict[str, Any] | None:
        return self._read_json(posixpath.join(self.job_dir(job_id), "failed.json"))

    def fail(self, job_id: str, error: str, worker_id: str) -> None:
        """Mark a job as one that cannot run; workers skip it (first error wins)."""
        body = {"error": error, "worker": worker_id, "at": _now().isoformat()}
        self.files.create_exclusive(posixpath.join(self.job_dir(job_id), "failed.json"), _dump(body))

    # ------------------------------------------------------------------ shards
    def latest_claim(self, job_id: str, shard: int) -> tuple[int, dict[str, Any]] | None:
        prefix = f"{shard:05d}."
        gens = []
        for name, _kind in self.files.entries(posixpath.join(self.job_dir(job_id), "claims")):
            if name.startswith(prefix) and name.endswith(".json"):
                gens.append(int(name[len(prefix) : -len(".json")]))
        for gen in sorted(gens, reverse=True):
            body = self._read_json(self.claim_path(job_id, shard, gen))
            if body is not None:
                return gen, body
        return None

    def _done_shards(self, job_id: str) -> dict[int, dict[str, Any]]:
        out = {}
        done_dir = posixpath.join(self.job_dir(job_id), "done")
        for name, _kind in self.files.entries(done_dir):
            if name.endswith(".json") and not name.startswith("."):
                body = self._read_json(posixpath.join(done_dir, name))
                if body is not None:
                    out[int(name[: -len(".json")])] = body
        return out

    def _is_stale(self, body: dict[str, Any]) -> bool:
        at = dt.datetime.fromisoformat(body.get("heartbeat_at") or body["claimed_at"])
        return (_now() - at).total_seconds() > self.stale_s

    def shards(self, job: Job) -> list[ShardState]:
        """The state of every shard of ``job``."""
        done = self._done_shards(job.job_id)
        out = []
        for k in range(job.n_shards):
            if k in done:
                out.append(ShardState(k, "done", done=done[k]))
                continue
            latest = self.latest_claim(job.job_id, k)
            if latest is None:
                out.append(ShardState(k, "pending"))
            elif latest[1].get("released"):
                out.append(ShardState(k, "released", claim=latest[1]))
            elif self._is_stale(latest[1]):
                out.append(ShardState(k, "stale", claim=latest[1]))
            else:
                out.append(ShardState(k, "running", claim=latest[1]))
        return out

    def claim_next(self, worker_id: str) -> Claim | None:
        """Claim the first shard (oldest job first) that is pending, released or stale; None when none is."""
        for job_id in self.job_ids():
            if self.failure(job_id) is not None:
                continue
            try:
                job = self.job(job_id)
            except (NotFoundError, ValueError):
                continue
            for state in self.shards(job):
                if state.state in ("done", "running"):
                    continue
                gen = 0 if state.claim is None else int(state.claim["gen"]) + 1
                now = _now().isoformat()
                body = {
                    "worker": worker_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "gen": gen,
                    "shard": state.shard,
                    "claimed_at": now,
                    "heartbeat_at": now,
                    "taken_over_from": (state.claim or {}).get("worker"),
                }
                if self.files.create_exclusive(self.claim_path(job_id, state.shard, gen), _dump(body)):
                    return Claim(self, job, state.shard, gen, worker_id, body)
        return None


class Heartbeat:
    """A thread that calls ``claim.beat()`` every ``interval_s`` with the latest progress."""

    def __init__(self, claim: Claim, interval_s: float) -> None:
        self.claim = claim
        self.interval_s = interval_s
        self.progress: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="medprobe-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def update(self, **progress: Any) -> None:
        with self._lock:
            self.progress.update(progress)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.claim.check_owner()
                with self._lock:
                    progress = dict(self.progress)
                self.claim.beat(**progress)
            except ClaimLost as e:
                self.error = e
                return
            except OSError as e:  # a transient store error: try again next beat
                self.error = e
