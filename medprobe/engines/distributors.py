"""One interface for running an extraction's shards: :class:`Distributor`. ``InProcess`` runs them here, ``Ray``
on a pool of actors, ``Slurm`` as a submitit job array; :func:`distribute` asks the store which shards still miss
rows and hands those to a distributor. Every distributor runs the same shard function through a
:class:`~medprobe.engines.shards.ShardRunner`; a rerun sends only the shards still missing."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from medprobe.engines.shards import SUMMARY_KEYS, FaultHook, ShardRunner, run_task
from medprobe.errors import InvalidInputError, MedprobeError
from medprobe.extractor.pipeline import ExtractOptions, check_dataset
from medprobe.extractor.plan import plan_images, shard_of

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

OnShard = Callable[[dict[str, Any]], None]


class Distributor(Protocol):
    """Runs the given shards of one extraction somewhere and returns their summaries (plus what it reports)."""

    name: str
    shared_store: bool  # its workers are other processes: the store must be reachable by URL

    def prepare(self) -> None:
        """Check it can run at all (packages, cluster, GPUs) before any shard is planned."""
        ...

    def run(self, store_url: str, options: ExtractOptions, shards: list[int], n_shards: int,
            on_shard: OnShard) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
        """Run ``shards``; returns each shard's summary and the distributor's own report (workers, job ids)."""
        ...


@dataclass
class InProcess:
    """The shards one after another in this process (one model load for all)."""

    runner: ShardRunner = field(default_factory=ShardRunner)
    name: str = "local"
    shared_store: bool = False
    store: FeatureStore | None = None  # this process's open store (an in-memory store works too)

    def prepare(self) -> None:
        """Nothing to check: the shards run here."""

    def run(self, store_url: str, options: ExtractOptions, shards: list[int], n_shards: int,
            on_shard: OnShard) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
        results = []
        for shard in shards:
            result = self.runner.run(self.store or store_url, options, shard, n_shards, self.name)
            results.append(result)
            on_shard(result)
        return results, {}


class _ShardActor:
    """A Ray actor: one runner, so the model stays loaded across the shards it runs."""

    def __init__(self, fault: FaultHook | None) -> None:
        self.runner = ShardRunner(fault=fault)

    def run(self, store_url: str, options: dict[str, Any], shard: int, n_shards: int) -> dict:
        return self.runner.run(store_url, options, shard, n_shards, "ray")


@dataclass
class Ray:
    """A fixed pool of Ray actors (one model load each) takes pending shards one at a time; a dead actor is
    restarted and its shard retried (up to ``max_retries``), which is safe because shards are idempotent."""

    address: str = "local"  # local (start one here), auto (the running cluster) or HOST:PORT
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_retries: int = 3
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    fault: FaultHook | None = None
    name: str = "ray"
    shared_store: bool = True

    def prepare(self) -> None:
        """Ray reachable, with enough GPUs for the pool."""
        with stdout_to_stderr():
            self.connect()

    def connect(self) -> Any:
        """Ray, initialised (here or on the cluster at ``address``), with enough GPUs for the pool."""
        try:
            import ray
        except ImportError:
            raise InvalidInputError("--engine ray needs Ray: pip install 'medprobe[ray]'") from None
        if not ray.is_initialized():
            if self.address not in ("local", "auto"):
                _reachable(self.address)
            kwargs = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            try:
                ray.init(address=None if self.address == "local" else self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise InvalidInputError(f"--address {self.address}: cannot connect to a Ray cluster ({e}); start one "
                                        "with `ray start --head` or use --address local") from e  # fmt: skip
        have = float(ray.cluster_resources().get("GPU", 0.0))
        if self.gpus_per_worker > 0 and have < self.gpus_per_worker:
            raise InvalidInputError(f"--gpus-per-worker {self.gpus_per_worker:g}: the Ray cluster has {have:g} GPUs; "
                                    "use --gpus-per-worker 0 for CPU workers")  # fmt: skip
        return ray

    def run(self, store_url: str, options: ExtractOptions, shards: list[int], n_shards: int,
            on_shard: OnShard) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
        with stdout_to_stderr():  # Ray's messages never mix into a command's -f json/csv output
            return self._run(store_url, options, shards, n_shards, on_shard)

    def _run(self, store_url: str, options: ExtractOptions, shards: list[int], n_shards: int,
             on_shard: OnShard) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
        ray = self.connect()
        from ray.exceptions import RayActorError, RayTaskError

        actor_cls: Any = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                                    max_restarts=self.max_retries, max_task_retries=self.max_retries)(_ShardActor)
        actors = [actor_cls.remote(self.fault) for _ in range(min(self.workers, len(shards)))]
        queue, running, results, payload = list(shards), {}, [], options.model_dump()
        try:
            for actor in actors:
                if queue:
                    shard = queue.pop(0)
                    running[actor.run.remote(store_url, payload, shard, n_shards)] = (actor, shard)
            while running:
                ref = ray.wait(list(running), num_returns=1)[0][0]
                actor, shard = running.pop(ref)
                try:
                    result = ray.get(ref)
                except (RayActorError, RayTaskError) as e:
                    raise MedprobeError(f"shard {shard} failed after {self.max_retries} retries: {type(e).__name__}: "
                                        f"{str(e).splitlines()[0]}; rerun the same command to resume") from e
                results.append(result)
                on_shard(result)
                if queue:
                    nxt = queue.pop(0)
                    running[actor.run.remote(store_url, payload, nxt, n_shards)] = (actor, nxt)
        finally:
            for actor in actors:
                ray.kill(actor)
        return results, {"workers": len(actors)}


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever is written to stdout in the block to stderr: Python's ``sys.stdout`` and file descriptor 1
    alike (Ray's C++ core and the processes it starts inherit the descriptor), so only the command's own output
    reaches stdout."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1 (an embedded interpreter): Python's stream only
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after Ray's minute of retries, when ``HOST:PORT`` accepts no connection."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"--address {address!r}: give local, auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise InvalidInputError(f"--address {address}: no Ray cluster answers there ({e}); start one with "
                                "`ray start --head` on that machine, or use --address local") from e  # fmt: skip


@dataclass
class Slurm:
    """Every pending shard as one task of a submitit job array. ``cluster``: submitit's executor (``slurm`` needs
    ``sbatch``; ``local`` and ``debug`` run on this machine)."""

    log_dir: str
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 4
    array_parallelism: int = 32
    timeout_min: int = 240
    cluster: str = "slurm"
    fault: FaultHook | None = None
    name: str = "slurm"
    shared_store: bool = True
    _executor: Any = field(default=None, init=False, repr=False, compare=False)  # built once, by prepare()

    def prepare(self) -> None:
        """submitit installed, and sbatch on PATH for a SLURM cluster."""
        self._executor = self.executor()

    def executor(self) -> Any:
        """The submitit executor with this array's parameters."""
        try:
            import submitit
        except ImportError:
            raise InvalidInputError("--engine slurm needs submitit: pip install 'medprobe[slurm]'") from None
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise InvalidInputError("--engine slurm needs SLURM's sbatch on PATH: run on the cluster's login node, "
                                    "or use --engine local or ray (or --slurm-cluster local to try it here)")
        executor = submitit.AutoExecutor(folder=self.log_dir, cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "cpus_per_task": self.cpus_per_task}
        if executor.cluster == "slurm":
            params.update(slurm_partition=self.partition, slurm_array_parallelism=self.array_parallelism,
                          slurm_gpus_per_task=self.gpus_per_task or None)  # fmt: skip
            params = {k: v for k, v in params.items() if v is not None}
        executor.update_parameters(**params)
        return executor

    def run(self, store_url: str, options: ExtractOptions, shards: list[int], n_shards: int,
            on_shard: OnShard) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
        n = len(shards)
        executor = self._executor or self.executor()
        jobs = executor.map_array(run_task, [store_url] * n, [options.model_dump()] * n, shards,
                                         [n_shards] * n, ["slurm"] * n, [self.fault] * n)  # fmt: skip
        results = []
        for job, shard in zip(jobs, shards, strict=True):
            try:
                result = job.result()
            except Exception as e:  # submitit re-raises the task's failure with its log path
                first = str(e).splitlines()[0] if str(e) else repr(e)
                raise MedprobeError(f"shard {shard} (job {job.job_id}) failed: {first}; logs in {self.log_dir}; "
                                    "rerun the same command to resume") from e  # fmt: skip
            results.append(result)
            on_shard(result)
        return results, {"job_ids": [j.job_id for j in jobs][:50], "log_dir": self.log_dir}


def distribute(store: FeatureStore, options: ExtractOptions, distributor: Distributor, *, n_shards: int,
               on_shard: OnShard | None = None) -> dict[str, Any]:  # fmt: skip
    """The shards of ``options``' extraction that still miss rows, run by ``distributor``; returns the totals."""
    if distributor.shared_store and store.url.startswith("memory://"):
        raise InvalidInputError(
            f"--engine {distributor.name} runs workers in other processes: give a store they can all reach (a shared "
            "folder or s3://bucket/prefix), not an in-memory store"
        )
    distributor.prepare()
    check_dataset(store, options.dataset)
    todo = pending_shards(store, options, n_shards)
    start = time.perf_counter()
    results, report = distributor.run(store.url, options, todo, n_shards, on_shard or (lambda _: None)) if todo \
        else ([], {})  # fmt: skip
    totals: dict[str, Any] = {k: sum(r[k] for r in results) for k in SUMMARY_KEYS if k != "seconds"}
    return {"engine": distributor.name, "shards_pending": len(todo), **report, **totals, "shards_run": len(results),
            "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip


def _known_feature_sets(store: FeatureStore, options: ExtractOptions) -> tuple[list[str], int] | None:
    """The feature sets an earlier extraction with these options registered (one per pooling) and their layer
    count, read from the store without loading the model; None when that is not unambiguous."""
    rows = store.sql(
        "SELECT feature_set_id, pooling, prompt, n_layers FROM feature_sets WHERE model_id = ? AND compute_dtype = ? "
        "AND storage_dtype = ?", [options.model, options.resolved_dtype(), options.storage_dtype],
    ).to_pylist()  # fmt: skip
    if options.prompt is not None or options.prompt_preset is not None:
        return None  # the stored prompt is the chat-templated text: only the model can format it
    rows = [r for r in rows if r["prompt"] is None]
    pooled = options.pooling or sorted({r["pooling"] for r in rows if r["pooling"] != "tokens"})
    poolings = [*pooled, *(["tokens"] if options.tokens else [])]  # token grids only when asked for
    chosen = []
    for pooling in poolings:
        match = [r for r in rows if r["pooling"] == pooling]
        if len(match) != 1:
            return None
        chosen.append(match[0])
    if not chosen or len({r["n_layers"] for r in chosen}) != 1:
        return None
    return [r["feature_set_id"] for r in chosen], int(chosen[0]["n_layers"])


def pending_shards(store: FeatureStore, options: ExtractOptions, n_shards: int) -> list[int]:
    """The shards with images still to do. Read from the store when an earlier run with these options left its
    feature sets there (a rerun submits only what is missing); otherwise every shard with images (a first run).
    Each shard re-plans with the loaded model's own feature-set ids, so this choice never skips real work that
    the store knows about; a new model revision under the same id gets a new feature set and every shard."""
    from medprobe.layerspec import parse_layers

    known = _known_feature_sets(store, options)
    if known is None:
        plan = plan_images(store, options.dataset, ["-"], [0], splits=options.split, limit=options.limit)
    else:
        ids, n_layers = known
        plan = plan_images(store, options.dataset, ids, parse_layers(options.layers, n_layers),
                           splits=options.split, limit=options.limit)  # fmt: skip
    return sorted({shard_of(h, n_shards) for h in plan.todo.column("image_hash").to_pylist()})
