"""Running an extraction on an engine: the local process, a Ray cluster, or SLURM job arrays (submitit).

Correctness comes from the store, not from the engine: :func:`extract_shard` is one idempotent function. It loads
the model once per process, asks the store which images of its shard (a fixed slice of the dataset by image hash)
still miss rows, commits its own segments (data first, then the manifest fragment that makes them visible) and
returns a small summary. Running a shard twice, or two copies at once, is harmless: the second finds the rows
committed, and a row committed twice shows once (the store's views keep the first segment). Activations never pass
through an engine's object store; only options and summaries do.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from medprobe.errors import InvalidInputError, MedprobeError
from medprobe.extractor.pipeline import ExtractOptions, Stopped, check_dataset, resolve_request, run_extraction
from medprobe.extractor.plan import plan_images, shard_of

if TYPE_CHECKING:
    from medprobe.adapters.adapter import Adapter
    from medprobe.featurestore import FeatureStore

FAULT_ENV = "MEDPROBE_FAULT_ONCE"  # tests: a marker path; a shard's first commit kills its process once
SUMMARY_KEYS = ("images_selected", "images_skipped", "images_todo", "images_forwarded", "images_committed",
                "failures", "segments", "seconds")  # fmt: skip

_ADAPTER: dict[tuple, Adapter] = {}  # one model per process (an actor, an array task, a worker)
_STORES: dict[str, FeatureStore] = {}  # one open store per process: a shard only refreshes it


def _adapter(options: ExtractOptions) -> Adapter:
    """The process's loaded model for ``options``; a different model replaces it."""
    from medprobe.extractor.pipeline import load_model

    key = (options.model, options.resolved_device(), options.resolved_dtype(), options.trust_remote_code,
           options.allow_pickle, options.quantization, options.device_map)  # fmt: skip
    if key not in _ADAPTER:
        _ADAPTER.clear()  # free the previous model before loading the next
        _ADAPTER[key] = load_model(options)
    return _ADAPTER[key]


def _fault_hook() -> Callable[[int], None] | None:
    marker = os.environ.get(FAULT_ENV)
    if not marker:
        return None

    def die_once(_: int) -> None:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(17)  # a killed worker, after its first commit

    return die_once


def extract_shard(
    store_url: str,
    options: dict[str, Any],
    shard: int,
    n_shards: int,
    engine: str = "local",
    *,
    store: FeatureStore | None = None,
    stop: threading.Event | None = None,
    on_commit: Callable[[int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    run_params: dict[str, Any] | None = None,
    on_start: Callable[[str, Any], None] | None = None,
    show_progress: bool = False,
) -> dict:
    """Extract what shard ``shard`` of ``n_shards`` still misses; idempotent. Returns counts, not activations.

    The engines call it with a URL; ``medprobe worker`` passes its open ``store``, its ``stop`` event and the
    hooks that keep its shard claim alive (``on_start(run_id, plan)`` once planned).
    """
    from medprobe.featurestore import FeatureStore, start_run

    if store is None:
        store = _STORES.get(store_url)
        if store is None:
            store = _STORES[store_url] = FeatureStore.open(store_url, create=False)
        else:
            store.refresh()  # other workers' commits since this process's last shard
    opts = ExtractOptions.model_validate(options)
    adapter = _adapter(opts)
    request = resolve_request(adapter, opts)
    for row in request.feature_sets.values():
        store.register_feature_set(row)
    plan = plan_images(store, opts.dataset, list(request.feature_set_ids.values()), request.layers,
                       splits=opts.split, shard=(shard, n_shards), limit=opts.limit)  # fmt: skip
    params = {**opts.model_dump(), "engine": engine, "shard": shard, "n_shards": n_shards, "host_pid": os.getpid(),
              "resolved_layers": request.layers, "feature_sets": request.feature_set_ids,
              **(run_params or {})}  # fmt: skip
    fault = _fault_hook()

    def committed(n: int) -> None:
        if on_commit is not None:
            on_commit(n)
        if fault is not None:
            fault(n)

    with start_run(store, "extract", params) as run:
        if on_start is not None:
            on_start(run.run_id, plan)
        try:
            summary = run_extraction(store, adapter, request, opts, run_id=run.run_id, shard=(shard, n_shards),
                                     stop=stop, show_progress=show_progress, on_commit=committed,
                                     before_commit=before_commit, plan=plan)  # fmt: skip
        except Stopped as s:
            run.summary.update(s.args[0])
            raise
        run.summary.update(summary)
    return {"shard": shard, **{k: summary[k] for k in SUMMARY_KEYS}}


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
    poolings = options.pooling or sorted({r["pooling"] for r in rows})
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


def _shared_store(store: FeatureStore, engine: str) -> str:
    if store.url.startswith("memory://"):
        raise InvalidInputError(
            f"--engine {engine} runs workers in other processes: give a store they can all reach (a shared folder or "
            "s3://bucket/prefix), not an in-memory store"
        )
    return store.url


def _totals(results: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(r[k] for r in results) for k in SUMMARY_KEYS if k != "seconds"}
    out["shards_run"] = len(results)
    return out


# ----------------------------------------------------------------------------- Ray
def run_ray(
    store: FeatureStore,
    options: ExtractOptions,
    *,
    n_shards: int,
    address: str = "local",
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    max_retries: int = 3,
    on_shard: Callable[[dict], None] | None = None,
    init_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every pending shard on a fixed pool of Ray actors (one model load each); a dead actor is restarted and its
    shard retried (up to ``max_retries``), which is safe because shards are idempotent."""
    try:
        import ray
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError:
        raise InvalidInputError("--engine ray needs Ray: pip install 'medprobe[ray]'") from None
    url = _shared_store(store, "ray")
    check_dataset(store, options.dataset)
    if not ray.is_initialized():
        if address not in ("local", "auto"):
            _reachable(address)
        kwargs = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
        try:
            ray.init(address=None if address == "local" else address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InvalidInputError(f"--address {address}: cannot connect to a Ray cluster ({e}); start one with "
                                    "`ray start --head` or use --address local") from e  # fmt: skip
    have_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if gpus_per_worker > 0 and have_gpus < gpus_per_worker:
        raise InvalidInputError(f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has {have_gpus:g} GPUs; "
                                "use --gpus-per-worker 0 for CPU workers")  # fmt: skip
    todo = pending_shards(store, options, n_shards)
    start = time.perf_counter()
    if not todo:
        return {"engine": "ray", "shards_pending": 0, **_totals([]), "seconds": 0.0}
    actor_cls: Any = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_retries,
                           max_task_retries=max_retries)(_ShardActor)  # fmt: skip
    actors: list[Any] = [actor_cls.remote() for _ in range(min(workers, len(todo)))]
    queue, running, results = list(todo), {}, []
    payload = options.model_dump()
    try:
        for actor in actors:
            if queue:
                shard = queue.pop(0)
                running[actor.run.remote(url, payload, shard, n_shards)] = (actor, shard)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            actor, shard = running.pop(ref)
            try:
                result = ray.get(ref)
            except (RayActorError, RayTaskError) as e:
                raise MedprobeError(f"shard {shard} failed after {max_retries} retries: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0]}; rerun the same command to resume") from e  # fmt: skip
            results.append(result)
            if on_shard is not None:
                on_shard(result)
            if queue:
                nxt = queue.pop(0)
                running[actor.run.remote(url, payload, nxt, n_shards)] = (actor, nxt)
    finally:
        for actor in actors:
            ray.kill(actor)
    return {"engine": "ray", "shards_pending": len(todo), "workers": len(actors), **_totals(results),
            "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip


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


class _ShardActor:
    """A Ray actor: the model stays loaded across the shards it runs."""

    def run(self, store_url: str, options: dict[str, Any], shard: int, n_shards: int) -> dict:
        return extract_shard(store_url, options, shard, n_shards, engine="ray")


# ----------------------------------------------------------------------------- SLURM
def run_slurm(
    store: FeatureStore,
    options: ExtractOptions,
    *,
    n_shards: int,
    log_dir: str,
    partition: str | None = None,
    gpus_per_task: int = 0,
    cpus_per_task: int = 4,
    array_parallelism: int = 32,
    timeout_min: int = 240,
    cluster: str | None = None,
    on_shard: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Every pending shard as one task of a submitit job array; a rerun submits only the shards still missing.

    ``cluster`` is submitit's (None: SLURM, which needs ``sbatch``; ``local`` / ``debug`` run on this machine).
    """
    try:
        import submitit
    except ImportError:
        raise InvalidInputError("--engine slurm needs submitit: pip install 'medprobe[slurm]'") from None
    url = _shared_store(store, "slurm")
    check_dataset(store, options.dataset)
    if cluster in (None, "slurm") and shutil.which("sbatch") is None:
        raise InvalidInputError("--engine slurm needs SLURM's sbatch on PATH: run on the cluster's login node, or "
                                "use --engine local or ray")  # fmt: skip
    todo = pending_shards(store, options, n_shards)
    start = time.perf_counter()
    if not todo:
        return {"engine": "slurm", "shards_pending": 0, **_totals([]), "seconds": 0.0}
    executor = submitit.AutoExecutor(folder=log_dir, cluster="slurm" if cluster is None else cluster)
    params: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": cpus_per_task}
    if executor.cluster == "slurm":
        params.update(slurm_partition=partition, slurm_array_parallelism=array_parallelism,
                      slurm_gpus_per_task=gpus_per_task or None)  # fmt: skip
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(**params)
    payload = options.model_dump()
    jobs = executor.map_array(extract_shard, [url] * len(todo), [payload] * len(todo), todo, [n_shards] * len(todo),
                              ["slurm"] * len(todo))  # fmt: skip
    results = []
    for job, shard in zip(jobs, todo, strict=True):
        try:
            result = job.result()
        except Exception as e:  # submitit re-raises the task's failure with its log path
            raise MedprobeError(f"shard {shard} (job {job.job_id}) failed: {str(e).splitlines()[0] if str(e) else e}; "
                                f"logs in {log_dir}; rerun the same command to resume") from e  # fmt: skip
        results.append(result)
        if on_shard is not None:
            on_shard(result)
    return {"engine": "slurm", "shards_pending": len(todo), "job_ids": [j.job_id for j in jobs][:50],
            **_totals(results), "log_dir": log_dir, "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
