"""Commands of the extractor: extract, submit, worker, status."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from medprobe.cli.common import console, err_console, open_store
from medprobe.cli.options import (
    AllowPickleOpt,
    DatasetOpt,
    DeviceOpt,
    FormatOpt,
    ModelOpt,
    NoProgressOpt,
    OutOpt,
    SplitOpt,
    StoreOpt,
    TrustRemoteCodeOpt,
    layers_option,
    retired,
    split_list,
    split_names,
    with_group,
)
from medprobe.cli.output import emit, resolve_format, wants_progress
from medprobe.cli.tables import key_value_table
from medprobe.errors import InvalidInputError
from medprobe.schemas.vocab import ComputeDType, Engine, ImageDecode, Quantization, StorageDType

if TYPE_CHECKING:
    from medprobe.extractor.pipeline import ExtractOptions

LayersOpt = Annotated[str, layers_option("layer of the model", "all")]


@dataclass
class ExtractSettings:
    """What to extract and how: shared by ``extract`` and ``submit``."""

    dataset: DatasetOpt
    model: ModelOpt
    prompt: Annotated[str | None, typer.Option("--prompt", help="Custom prompt text (VLMs).")] = None
    prompt_preset: Annotated[
        str | None,
        typer.Option("--prompt-preset", help="Study prompt: histology, radiology-chest, radiology-knee, ... general."),
    ] = None
    layers: LayersOpt = "all"
    pooling: Annotated[
        list[str] | None,
        typer.Option(
            "--pooling", help="Poolings, comma list: last, image_mean, mean, cls, spatial_mean (default: the model's)."
        ),
    ] = None
    batch_size: Annotated[
        str, typer.Option("--batch-size", "-b", help="Images per forward pass, or auto (halves on out-of-memory).")
    ] = "auto"
    dtype: Annotated[
        ComputeDType | None, typer.Option("--dtype", help="Compute dtype (default: bf16 on CUDA, fp32 on CPU).")
    ] = None
    device: DeviceOpt = None
    decode_workers: Annotated[
        int | None,
        typer.Option(
            "--decode-workers", min=0, help="Decoding processes (default: 0 on 1-2 cores, else cores - 1, at most 8)."
        ),
    ] = None
    decode: Annotated[
        ImageDecode,
        typer.Option(
            "--decode",
            help="Where JPEGs are decoded and resized: auto (on the GPU with nvJPEG when the model runs on CUDA and "
            "supports it), pil (CPU workers), torchvision (the model's device; other formats decode on the CPU).",
        ),
    ] = ImageDecode.auto
    split: SplitOpt = None
    storage_dtype: Annotated[StorageDType, typer.Option("--storage-dtype", help="How activations are stored.")] = (
        StorageDType.float16
    )
    trust_remote_code: TrustRemoteCodeOpt = False
    allow_pickle: AllowPickleOpt = False
    quantization: Annotated[
        Quantization | None, typer.Option("--quantization", help="Weights quantization (needs bitsandbytes).")
    ] = None
    device_map: Annotated[str | None, typer.Option("--device-map", help="accelerate device_map, e.g. auto.")] = None
    commit_every: Annotated[int, typer.Option("--commit-every", min=1, help="Commit a segment every N images.")] = 256
    commit_seconds: Annotated[float, typer.Option("--commit-seconds", help="... or every N seconds.")] = 60.0
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N images (by image hash).")] = None
    study_preprocessing: Annotated[
        bool, typer.Option("--study-preprocessing", help="Downsample to 1,024 px and scale high-bit images per image.")
    ] = False

    def options(self) -> ExtractOptions:
        """The pipeline's options (validated)."""
        from medprobe.extractor.pipeline import ExtractOptions

        try:
            return ExtractOptions(
                dataset=self.dataset,
                model=self.model,
                prompt=self.prompt,
                prompt_preset=self.prompt_preset,
                layers=self.layers,
                pooling=split_list(self.pooling) or None,
                batch_size=self.batch_size,  # type: ignore[arg-type]  # validated: "auto" or a positive integer
                dtype=None if self.dtype is None else self.dtype.value,
                device=self.device,
                workers=self.decode_workers,
                decode=self.decode.value,
                splits=split_names(self.split) or None,
                storage_dtype=self.storage_dtype.value,
                trust_remote_code=self.trust_remote_code,
                allow_pickle=self.allow_pickle,
                quantization=None if self.quantization is None else self.quantization.value,
                device_map=self.device_map,
                commit_every=self.commit_every,
                commit_seconds=self.commit_seconds,
                limit=self.limit,
                study_preprocessing=self.study_preprocessing,
            )
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "options"
            raise InvalidInputError(f"{where}: {first['msg']}") from None


@dataclass
class EngineOptions:
    """Where the extraction runs (local: this process; ray / slurm: shards on workers, each idempotent)."""

    engine: Annotated[Engine, typer.Option("--engine", help="local (this process), ray or slurm.")] = Engine.local
    shards: Annotated[
        int, typer.Option("--shards", min=1, help="ray/slurm: split the images into N shards (by image hash).")
    ] = 16
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="ray: actors in the pool (default: 1 per GPU, else 1).")
    ] = None
    address: Annotated[
        str, typer.Option("--address", help="ray: local (start one here), auto (the running cluster) or HOST:PORT.")
    ] = "local"
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", min=0, help="ray: GPUs per actor.")] = 0.0
    cpus_per_worker: Annotated[float, typer.Option("--cpus-per-worker", min=0, help="ray: CPUs per actor.")] = 1.0
    partition: Annotated[str | None, typer.Option("--partition", help="slurm: the partition.")] = None
    gpus_per_task: Annotated[int, typer.Option("--gpus-per-task", min=0, help="slurm: GPUs per array task.")] = 0
    array_parallelism: Annotated[
        int, typer.Option("--array-parallelism", min=1, help="slurm: array tasks running at once.")
    ] = 32
    timeout_min: Annotated[int, typer.Option("--timeout-min", min=1, help="slurm: time limit per task.")] = 240
    log_dir: Annotated[
        str | None, typer.Option("--log-dir", help="slurm: submitit logs (default: <store>/slurm-logs for a folder).")
    ] = None


def run_on_engine(st: Any, opts: Any, eng: EngineOptions, show_progress: bool) -> dict[str, Any]:
    """ray / slurm: the pending shards on the engine, with a progress bar fed by finished shards."""
    from medprobe.extractor import engines
    from medprobe.featurestore import start_run
    from medprobe.progress import progress_bar

    st.check_writable()
    params = {**opts.model_dump(), "engine": eng.engine.value, "shards": eng.shards}
    with start_run(st, "extract", params) as run, progress_bar("shards", disable=not show_progress) as bar:
        task = bar.add_task(f"extract {opts.dataset} on {eng.engine.value}", total=None)

        def on_shard(result: dict) -> None:
            bar.advance(task, 1)

        if eng.engine is Engine.ray:
            workers = eng.workers or 1
            summary = engines.run_ray(
                st, opts, n_shards=eng.shards, address=eng.address, workers=workers,
                gpus_per_worker=eng.gpus_per_worker, cpus_per_worker=eng.cpus_per_worker, on_shard=on_shard,
            )  # fmt: skip
        else:
            log_dir = eng.log_dir or _default_log_dir(st.url)
            summary = engines.run_slurm(
                st, opts, n_shards=eng.shards, log_dir=log_dir, partition=eng.partition,
                gpus_per_task=eng.gpus_per_task, array_parallelism=eng.array_parallelism,
                timeout_min=eng.timeout_min, cluster=os.environ.get("MEDPROBE_SUBMITIT_CLUSTER"), on_shard=on_shard,
            )  # fmt: skip
        run.summary.update(summary)
    return {"run_id": run.run_id, **summary}


def _default_log_dir(store_url: str) -> str:
    if "://" in store_url and not store_url.startswith("file://"):
        raise InvalidInputError("--engine slurm with a remote store: give --log-dir, a folder every node can write")
    return os.path.join(store_url.removeprefix("file://"), "slurm-logs")


@contextmanager
def graceful_stop() -> Iterator[threading.Event]:
    """SIGTERM / first SIGINT set the returned event (finish and commit the batch in flight); a second SIGINT aborts."""
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        err_console.print(f"{signal.Signals(signum).name}: committing the batch in flight, then stopping")

    for s in previous:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


_SUMMARY_KEYS = (
    "images_selected",
    "images_skipped",
    "images_todo",
    "images_forwarded",
    "images_committed",
    "failures",
    "forward_batches",
    "segments",
    "batch_size",
    "decode",
    "seconds",
    "images_per_s",
)


def summary_table(summary: dict[str, Any]) -> Table:
    """The final summary: counts, rate and seconds per stage."""
    items = [
        (key.replace("_", " "), f"{summary[key]:,}" if isinstance(summary[key], int) else str(summary[key]))
        for key in _SUMMARY_KEYS
        if key in summary
    ]
    stages = summary.get("stage_seconds", {})
    items += [(f"{stage.replace('_', ' ')} s", f"{sec:,.2f}") for stage, sec in stages.items()]
    items += [(f"feature set ({pooling})", fs) for pooling, fs in summary.get("feature_sets", {}).items()]
    return key_value_table("extraction summary", items)


def register(app: typer.Typer) -> None:
    """Add extract, submit, worker and status to ``app``."""

    @app.command()
    @retired(j="-j -> --decode-workers (decode processes) or --workers (ray actors)")
    @with_group(ExtractSettings, "settings")
    @with_group(EngineOptions, "eng")
    def extract(
        settings: ExtractSettings,
        eng: EngineOptions,
        no_progress: NoProgressOpt = False,
        fmt: FormatOpt = None,
        out: OutOpt = None,
        store: StoreOpt = None,
    ) -> None:
        """Extract pooled per-layer activations of a dataset's images into the store (resumable)."""
        from medprobe.extractor.pipeline import Stopped
        from medprobe.extractor.pipeline import extract as run

        resolve_format(fmt, out)
        if eng.engine is Engine.local and eng.workers is not None:
            raise InvalidInputError("--workers sizes a ray pool (--engine ray); decode processes: --decode-workers")
        opts = settings.options()
        st = open_store(store)
        if eng.engine is not Engine.local:
            doc = run_on_engine(st, opts, eng, not no_progress and wants_progress(fmt, out))
            emit(fmt, out, rows=[{k: v for k, v in doc.items() if not isinstance(v, list)}], document=doc,
                 show=lambda: console.print(key_value_table(f"extraction on {eng.engine.value}",
                                                            [(k, str(v)) for k, v in doc.items()])))  # fmt: skip
            return
        with graceful_stop() as stop:
            try:
                summary = run(st, opts, stop=stop, show_progress=not no_progress and wants_progress(fmt, out))
            except Stopped as s:
                console.print(summary_table(s.args[0]))
                err_console.print("stopped: everything forwarded is committed; rerun the same command to resume")
                raise typer.Exit(130) from None
        emit(fmt, out, rows=[summary], document=summary, show=lambda: console.print(summary_table(summary)))

    @app.command()
    @retired(workers="--workers/-j -> --decode-workers")
    @with_group(ExtractSettings, "settings")
    def submit(
        settings: ExtractSettings,
        shards: Annotated[int, typer.Option("--shards", min=1, help="Split the job into N shards for workers.")] = 16,
        fmt: FormatOpt = None,
        out: OutOpt = None,
        store: StoreOpt = None,
    ) -> None:
        """Queue an extraction job (same options as extract) for `medprobe worker`."""
        from medprobe.extractor.jobs import JobQueue
        from medprobe.extractor.plan import check_dataset

        resolve_format(fmt, out)
        opts = settings.options()
        st = open_store(store)
        st.check_writable()
        check_dataset(st, opts.dataset)
        job = JobQueue(st).submit(opts, n_shards=shards)
        doc = {"job_id": job.job_id, "dataset": opts.dataset, "model": opts.model, "shards": shards}
        text = f"queued {job.job_id} ({opts.dataset}, {opts.model}, {shards} shards)"
        emit(fmt, out, rows=[doc], document=doc, show=lambda: console.print(text))

    @app.command()
    def worker(
        poll: Annotated[float, typer.Option("--poll", help="Seconds between looks at an empty queue.")] = 5.0,
        heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between heartbeats.")] = 10.0,
        stale_after: Annotated[
            float, typer.Option("--stale-after", help="Take over a shard whose heartbeat is this many seconds old.")
        ] = 120.0,
        exit_when_idle: Annotated[bool, typer.Option("--exit-when-idle", help="Stop when the queue is empty.")] = False,
        no_progress: NoProgressOpt = False,
        fmt: FormatOpt = None,
        out: OutOpt = None,
        store: StoreOpt = None,
    ) -> None:
        """Run queued extraction jobs until stopped (SIGTERM/SIGINT: commit the batch in flight, then exit)."""
        from medprobe.extractor.worker import run_worker

        resolve_format(fmt, out)
        st = open_store(store)
        with graceful_stop() as stop:
            stats = run_worker(
                st,
                stop=stop,
                poll_s=poll,
                heartbeat_s=heartbeat,
                stale_s=stale_after,
                exit_when_idle=exit_when_idle,
                show_progress=not no_progress and wants_progress(fmt, out),
                echo=err_console.print,
            )
        doc = dataclasses.asdict(stats)
        text = (
            f"worker {stats.worker_id}: {stats.shards_done} shards, {stats.images_committed:,} images committed, "
            f"{stats.failures} failures{', stopped' if stats.stopped else ''}"
        )
        emit(fmt, out, rows=[doc], document=doc, show=lambda: console.print(text))

    @app.command()
    def status(
        stale_after: Annotated[float, typer.Option("--stale-after", help="Heartbeat age that counts as dead.")] = 120.0,
        fmt: FormatOpt = None,
        out: OutOpt = None,
        store: StoreOpt = None,
    ) -> None:
        """Show queued jobs (shards done/running/pending, images, rates) and recent extraction runs."""
        from medprobe.extractor.status import job_rows, recent_runs

        st = open_store(store)
        jobs = job_rows(st, stale_s=stale_after)
        runs = recent_runs(st)

        def show() -> None:
            t = Table(title=f"extraction jobs in {st.url}")
            for col in ("job", "dataset", "model", "state", "shards done", "running", "pending", "images", "images/s"):
                t.add_column(col, justify="right" if col in ("images", "images/s") else "left")
            for r in jobs:
                t.add_row(
                    *(str(r[k]) for k in ("job", "dataset", "model", "state", "done", "running", "pending")),
                    f"{r['images']:,}",
                    f"{r['rate']:,.1f}",
                )
            console.print(t if jobs else "no queued jobs")
            if runs:
                recent = Table(title="recent extraction runs")
                for col in ("run", "engine", "status", "started", "images", "images/s", "failures"):
                    recent.add_column(col)
                for row in runs:
                    keys = ("run", "engine", "status", "started", "images", "rate", "failures")
                    recent.add_row(*(str(row[k]) for k in keys))
                console.print(recent)

        emit(fmt, out, rows=jobs, document={"jobs": jobs, "runs": runs}, show=show)
