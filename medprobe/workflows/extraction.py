"""Extraction workflows: ``extract`` (this process, or shards on Ray / SLURM), ``submit`` (the job queue),
``worker`` (run queued shards) and ``status`` (jobs and recent runs)."""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from medprobe.errors import InvalidInputError
from medprobe.schemas.vocab import ComputeDType, Engine, ImageDecode, Quantization, SlurmCluster, StorageDType
from medprobe.sizes import parse_bytes
from medprobe.workflows.common import ListArg, StoreArg, choice, open_store, optional_choice, split_list, split_names
from medprobe.workflows.results import Result

if TYPE_CHECKING:
    from medprobe.extractor.pipeline import ExtractOptions
    from medprobe.featurestore import FeatureStore

SUMMARY_KEYS = ("images_selected", "images_skipped", "images_todo", "images_forwarded", "images_committed",
                "failures", "forward_batches", "segments", "batch_size", "decode", "seconds",
                "images_per_s")  # fmt: skip


class ExtractionStopped(KeyboardInterrupt):
    """A graceful stop (``stop`` set): everything forwarded is committed; ``summary`` says how far it got."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__(summary)
        self.summary = summary


class ImagesMissingError(InvalidInputError):
    """Image files of the dataset are gone from where they were ingested (a moved or deleted folder); the other
    images were extracted and committed, and ``result`` says so."""

    def __init__(self, message: str, result: ExtractResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ExtractResult(Result):
    """One extraction: counts, rate, seconds per stage and the feature set id of each pooling.

    ``summary`` is the whole document (engine runs add their shard counts); the common counts are attributes.
    """

    run_id: str | None
    images_committed: int
    failures: int
    feature_sets: dict[str, str]
    summary: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The extraction summary."""
        from medprobe.workflows.results import jsonable

        return jsonable(self.summary)

    def rows(self) -> list[dict[str, Any]]:
        """One row: the summary without its nested entries (engine runs), or all of it (local runs)."""
        if "engine" in self.summary:
            return [{k: v for k, v in self.to_dict().items() if not isinstance(v, list)}]
        return [self.to_dict()]


def extract_options(
    *, dataset: str, model: str, prompt: str | None = None, prompt_preset: str | None = None, layers: str = "all",
    pooling: ListArg = None, batch_size: str | int = "auto", dtype: str | ComputeDType | None = None,
    device: str | None = None, decode_workers: int | None = None, decode: str | ImageDecode = ImageDecode.auto,
    split: ListArg = None, storage_dtype: str | StorageDType = StorageDType.float16, trust_remote_code: bool = False,
    allow_pickle: bool = False, quantization: str | Quantization | None = None, device_map: str | None = None,
    commit_every: int = 256, commit_seconds: float = 60.0, limit: int | None = None,
    study_preprocessing: bool = False, tokens: bool = False, max_bytes: str | int | None = None,
) -> ExtractOptions:  # fmt: skip
    """The extraction's options, validated once (the job queue stores them as JSON)."""
    from medprobe.extractor.pipeline import ExtractOptions

    compute = optional_choice(ComputeDType, dtype, "--dtype")
    quant = optional_choice(Quantization, quantization, "--quantization")
    try:
        return ExtractOptions(
            dataset=dataset, model=model, prompt=prompt, prompt_preset=prompt_preset, layers=str(layers),
            pooling=split_list(pooling) or None, batch_size=str(batch_size),  # type: ignore[arg-type]  # validated
            dtype=None if compute is None else compute.value, device=device, decode_workers=decode_workers,
            decode=choice(ImageDecode, decode, "--decode").value, split=split_names(split) or None,
            storage_dtype=choice(StorageDType, storage_dtype, "--storage-dtype").value,
            trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
            quantization=None if quant is None else quant.value, device_map=device_map, commit_every=commit_every,
            commit_seconds=commit_seconds, limit=limit, study_preprocessing=study_preprocessing, tokens=tokens,
            max_bytes=None if max_bytes is None else parse_bytes(max_bytes),
        )  # fmt: skip
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "options"
        raise InvalidInputError(f"{where}: {first['msg']}") from None


@dataclass
class EngineArgs:
    """Where an extraction runs: local (this process), ray or slurm (shards, each idempotent)."""

    engine: str | Engine = Engine.local
    shards: int = 16
    workers: int | None = None
    address: str = "local"
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    partition: str | None = None
    gpus_per_task: int = 0
    array_parallelism: int = 32
    timeout_min: int = 240
    log_dir: str | None = None
    slurm_cluster: str | SlurmCluster = SlurmCluster.slurm


def _default_log_dir(store_url: str) -> str:
    if "://" in store_url and not store_url.startswith("file://"):
        raise InvalidInputError("--engine slurm with a remote store: give --log-dir, a folder every node can write")
    return os.path.join(store_url.removeprefix("file://"), "slurm-logs")


def _on_engine(st: FeatureStore, opts: ExtractOptions, eng: EngineArgs, engine: Engine,
               show_progress: bool) -> dict[str, Any]:  # fmt: skip
    """ray / slurm: the pending shards on the engine, with a progress bar fed by finished shards."""
    from medprobe.engines.distributors import Distributor, Ray, Slurm, distribute
    from medprobe.featurestore import start_run
    from medprobe.progress import progress_bar

    st.check_writable()
    distributor: Distributor
    if engine is Engine.ray:
        distributor = Ray(address=eng.address, workers=eng.workers or 1, gpus_per_worker=eng.gpus_per_worker,
                          cpus_per_worker=eng.cpus_per_worker)  # fmt: skip
    else:
        distributor = Slurm(
            log_dir=eng.log_dir or _default_log_dir(st.url), partition=eng.partition, gpus_per_task=eng.gpus_per_task,
            array_parallelism=eng.array_parallelism, timeout_min=eng.timeout_min,
            cluster=choice(SlurmCluster, eng.slurm_cluster, "--slurm-cluster").value,
        )  # fmt: skip
    params = {**opts.model_dump(), "engine": engine.value, "shards": eng.shards}
    with start_run(st, "extract", params) as run, progress_bar("shards", disable=not show_progress) as bar:
        task = bar.add_task(f"extract {opts.dataset} on {engine.value}", total=None)
        summary = distribute(st, opts, distributor, n_shards=eng.shards, on_shard=lambda _: bar.advance(task, 1))
        run.summary.update(summary)
    return {"run_id": run.run_id, **summary}


def extract(
    *, dataset: str, model: str, prompt: str | None = None, prompt_preset: str | None = None, layers: str = "all",
    pooling: ListArg = None, batch_size: str | int = "auto", dtype: str | ComputeDType | None = None,
    device: str | None = None, decode_workers: int | None = None, decode: str | ImageDecode = ImageDecode.auto,
    split: ListArg = None, storage_dtype: str | StorageDType = StorageDType.float16, trust_remote_code: bool = False,
    allow_pickle: bool = False, quantization: str | Quantization | None = None, device_map: str | None = None,
    commit_every: int = 256, commit_seconds: float = 60.0, limit: int | None = None,
    study_preprocessing: bool = False, tokens: bool = False, max_bytes: str | int | None = None,
    engine: str | Engine = Engine.local, shards: int = 16,
    workers: int | None = None, address: str = "local", gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
    partition: str | None = None, gpus_per_task: int = 0, array_parallelism: int = 32, timeout_min: int = 240,
    log_dir: str | None = None, slurm_cluster: str | SlurmCluster = SlurmCluster.slurm, no_progress: bool = False,
    store: StoreArg = None, stop: threading.Event | None = None,
) -> ExtractResult:  # fmt: skip
    """Extract pooled per-layer activations of a dataset's images into the store (resumable).

    Args:
        dataset, model: what to extract (model: a Hugging Face id, ``hf-hub:org/name``, ``timm/<name>``,
            ``open_clip:<arch>/<tag>``, a local directory, a plugin such as ``efficientnet-lite0``).
        prompt, prompt_preset: the prompt of a VLM (text, or a study preset such as ``radiology-knee``).
        layers: ``all``, ``5``, ``-1``, ``0,4,-1``, ``2-10`` or ``2:10:2``.
        pooling: poolings (``last``, ``image_mean``, ``mean``, ``cls``, ``spatial_mean``; default: the model's).
        batch_size: images per forward pass, or ``auto`` (halves on out-of-memory).
        dtype, device, quantization, device_map: how the model runs.
        decode_workers: decoding processes; decode: ``auto``, ``pil`` or ``torchvision``.
        split: only these splits; limit: only the first N images (by image hash).
        storage_dtype: how activations are stored (float16, bfloat16, float32).
        trust_remote_code, allow_pickle: permissions for the model's own code and pickle weights.
        commit_every, commit_seconds: commit a segment every N images or seconds.
        study_preprocessing: downsample to 1,024 px and scale high-bit images per image (the study's recipe).
        tokens: also store every token of the layers' grids (patch tokens of a ViT, a CNN stage's positions, a
            decoder VLM's image tokens) as a feature set of pooling ``tokens``, for ``heatmap``.
        max_bytes: refuse an extraction that would write more (``"2G"``, ``"500M"`` or bytes); what it will write is
            printed before it starts.
        engine: ``local``, ``ray`` or ``slurm``; shards: split into N shards (ray/slurm);
        workers, address, gpus_per_worker, cpus_per_worker: the Ray pool; partition, gpus_per_task,
        array_parallelism, timeout_min, log_dir, slurm_cluster: the SLURM array (``slurm_cluster="local"`` runs
        submitit's local executor, for a try without a cluster).
        no_progress: no progress bar; store: a store URL or an open ``FeatureStore``.
        stop: an event that, once set, commits the batch in flight and raises :class:`ExtractionStopped`.

    Raises :class:`ImagesMissingError` (after committing the rest) when image files are gone from where they were
    ingested: a moved folder is re-pointed by re-ingesting it.
    """
    from medprobe.extractor.pipeline import Stopped
    from medprobe.extractor.pipeline import extract as run_local

    opts = extract_options(
        dataset=dataset, model=model, prompt=prompt, prompt_preset=prompt_preset, layers=layers, pooling=pooling,
        batch_size=batch_size, dtype=dtype, device=device, decode_workers=decode_workers, decode=decode, split=split,
        storage_dtype=storage_dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
        quantization=quantization, device_map=device_map, commit_every=commit_every, commit_seconds=commit_seconds,
        limit=limit, study_preprocessing=study_preprocessing, tokens=tokens, max_bytes=max_bytes,
    )  # fmt: skip
    chosen = choice(Engine, engine, "--engine")
    if chosen is Engine.local and workers is not None:
        raise InvalidInputError("--workers sizes a ray pool (--engine ray); decode processes: --decode-workers")
    st = open_store(store)
    if chosen is not Engine.local:
        eng = EngineArgs(chosen, shards, workers, address, gpus_per_worker, cpus_per_worker, partition,
                         gpus_per_task, array_parallelism, timeout_min, log_dir, slurm_cluster)  # fmt: skip
        summary = _on_engine(st, opts, eng, chosen, not no_progress)
    else:
        try:
            summary = run_local(st, opts, stop=stop, show_progress=not no_progress)
        except Stopped as s:
            raise ExtractionStopped(s.args[0]) from None
    result = ExtractResult(run_id=summary.get("run_id"), images_committed=int(summary.get("images_committed", 0)),
                           failures=int(summary.get("failures", 0)), feature_sets=dict(summary.get("feature_sets", {})),
                           summary=summary)  # fmt: skip
    missing = int(summary.get("failures_by_reason", {}).get("missing", 0))
    if missing:
        raise ImagesMissingError(
            f"{missing} image file(s) of dataset {dataset!r} are missing (first: {summary.get('first_missing')}); "
            f"if the folder moved, re-ingest it from where it is now (medprobe ingest NEW_PATH --layout ... -d "
            f"{dataset}) and rerun extract; the other images are committed",
            result,
        )
    return result


@dataclass
class SubmitResult(Result):
    """A queued extraction job."""

    job_id: str
    dataset: str
    model: str
    shards: int


def submit(
    *, dataset: str, model: str, prompt: str | None = None, prompt_preset: str | None = None, layers: str = "all",
    pooling: ListArg = None, batch_size: str | int = "auto", dtype: str | ComputeDType | None = None,
    device: str | None = None, decode_workers: int | None = None, decode: str | ImageDecode = ImageDecode.auto,
    split: ListArg = None, storage_dtype: str | StorageDType = StorageDType.float16, trust_remote_code: bool = False,
    allow_pickle: bool = False, quantization: str | Quantization | None = None, device_map: str | None = None,
    commit_every: int = 256, commit_seconds: float = 60.0, limit: int | None = None,
    study_preprocessing: bool = False, tokens: bool = False, max_bytes: str | int | None = None, shards: int = 16,
    store: StoreArg = None,
) -> SubmitResult:  # fmt: skip
    """Queue an extraction job in ``shards`` shards for ``worker`` processes (any machine that opens the store).

    Args:
        dataset, model, prompt, prompt_preset, layers, pooling, batch_size, dtype, device, decode_workers, decode,
        split, storage_dtype, trust_remote_code, allow_pickle, quantization, device_map, commit_every,
        commit_seconds, limit, study_preprocessing, tokens, max_bytes: what to extract and how, as in
        :func:`extract`.
        shards: split the job into this many shards (by image hash); store: a store URL or an open ``FeatureStore``.
    """
    from medprobe.engines.jobs import JobQueue
    from medprobe.extractor.plan import check_dataset

    opts = extract_options(
        dataset=dataset, model=model, prompt=prompt, prompt_preset=prompt_preset, layers=layers, pooling=pooling,
        batch_size=batch_size, dtype=dtype, device=device, decode_workers=decode_workers, decode=decode, split=split,
        storage_dtype=storage_dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
        quantization=quantization, device_map=device_map, commit_every=commit_every, commit_seconds=commit_seconds,
        limit=limit, study_preprocessing=study_preprocessing, tokens=tokens, max_bytes=max_bytes,
    )  # fmt: skip
    st = open_store(store)
    st.check_writable()
    check_dataset(st, opts.dataset)
    job = JobQueue(st).submit(opts, n_shards=shards)
    return SubmitResult(job_id=job.job_id, dataset=opts.dataset, model=opts.model, shards=shards)


@dataclass
class WorkerResult(Result):
    """What one worker process did."""

    worker_id: str
    shards_done: int
    images_committed: int
    failures: int
    jobs_failed: list[str]
    stopped: bool


def worker(
    *, poll: float = 5.0, heartbeat: float = 10.0, stale_after: float = 120.0, exit_when_idle: bool = False,
    no_progress: bool = False, store: StoreArg = None, stop: threading.Event | None = None,
    echo: Any = print,
) -> WorkerResult:  # fmt: skip
    """Run queued extraction jobs until ``stop`` is set (or, with ``exit_when_idle``, the queue is empty).

    poll: seconds between looks at an empty queue; heartbeat: seconds between heartbeats; stale_after: take over a
    shard whose heartbeat is this many seconds old; echo: where progress lines go; no_progress: no progress bar;
    store: a store URL or an open ``FeatureStore``.
    """
    from medprobe.engines.worker import run_worker

    st = open_store(store)
    stats = run_worker(st, stop=stop or threading.Event(), poll_s=poll, heartbeat_s=heartbeat, stale_s=stale_after,
                       exit_when_idle=exit_when_idle, show_progress=not no_progress, echo=echo)  # fmt: skip
    return WorkerResult(**dataclasses.asdict(stats))


@dataclass
class StatusResult(Result):
    """Queued jobs (shard states, images, rates) and recent extraction runs."""

    jobs: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    store_url: str = field(default="", repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """One row per job."""
        return list(self.jobs)


def status(*, stale_after: float = 120.0, store: StoreArg = None) -> StatusResult:
    """Queued extraction jobs and recent extraction runs of ``store``; stale_after: the heartbeat age (seconds) that
    counts as dead."""
    from medprobe.engines.status import job_rows, recent_runs

    st = open_store(store)
    return StatusResult(jobs=job_rows(st, stale_s=stale_after), runs=recent_runs(st), store_url=st.url)
