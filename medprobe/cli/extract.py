"""Commands of the extractor: extract, submit, worker, status."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from medprobe.cli.common import StoreOption, console, err_console, open_store
from medprobe.errors import InvalidInputError

Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name in the store.")]
Model = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Hugging Face id, local directory, plugin (efficientnet-lite0) or tiny-random/*."
    ),
]
Prompt = Annotated[str | None, typer.Option("--prompt", help="Custom prompt text (VLMs).")]
PromptPreset = Annotated[
    str | None,
    typer.Option("--prompt-preset", help="Study prompt: histology, radiology-chest, radiology-knee, ... general."),
]
Layers = Annotated[str, typer.Option("--layers", help="all | 0,4,-1 | 2:10 | 0-5 (negative counts from the end).")]
Pooling = Annotated[
    str | None,
    typer.Option("--pooling", help="Comma list of last, image_mean, mean, cls, spatial_mean [default: the model's]."),
]
BatchSize = Annotated[str, typer.Option("--batch-size", "-b", help="Images per forward pass, or auto (halves on OOM).")]
DType = Annotated[str | None, typer.Option("--dtype", help="bf16 | fp16 | fp32 [default: bf16 on CUDA, fp32 on CPU].")]
Device = Annotated[str | None, typer.Option("--device", help="cuda | cpu [default: cuda when available].")]
Workers = Annotated[int | None, typer.Option("--workers", "-j", help="DataLoader workers decoding images.")]
Split = Annotated[list[str] | None, typer.Option("--split", help="Only these splits (repeatable).")]
StorageDType = Annotated[str, typer.Option("--storage-dtype", help="float16 | bfloat16 | float32.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model repositories' own code.")]
Quantization = Annotated[str | None, typer.Option("--quantization", help="8bit | 4bit (needs bitsandbytes).")]
DeviceMap = Annotated[str | None, typer.Option("--device-map", help="accelerate device_map, e.g. auto.")]
CommitEvery = Annotated[int, typer.Option("--commit-every", help="Commit a segment every N images.")]
CommitSeconds = Annotated[float, typer.Option("--commit-seconds", help="... or every N seconds.")]
Limit = Annotated[int | None, typer.Option("--limit", help="Only the first N images (by image hash).")]
StudyPreprocessing = Annotated[
    bool, typer.Option("--study-preprocessing", help="Downsample to 1,024 px and scale high-bit images per image.")
]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]


def _options(**kwargs: Any):
    from medprobe.extractor.pipeline import ExtractOptions

    pooling = kwargs.pop("pooling")
    kwargs["pooling"] = [p.strip() for p in pooling.split(",") if p.strip()] if pooling else None
    kwargs["splits"] = kwargs.pop("split") or None
    try:
        return ExtractOptions(**kwargs)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "options"
        raise InvalidInputError(f"{where}: {first['msg']}") from None


@contextmanager
def graceful_stop():
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


def summary_table(summary: dict[str, Any]) -> Table:
    """The final summary: counts, rate and seconds per stage."""
    t = Table(title="extraction summary", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    for key in (
        "images_selected",
        "images_skipped",
        "images_todo",
        "images_forwarded",
        "images_committed",
        "failures",
        "forward_batches",
        "segments",
        "batch_size",
        "seconds",
        "images_per_s",
    ):
        if key in summary:
            value = summary[key]
            t.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
    for stage, seconds in summary.get("stage_seconds", {}).items():
        t.add_row(f"{stage.replace('_', ' ')} s", f"{seconds:,.2f}")
    for pooling, fs in summary.get("feature_sets", {}).items():
        t.add_row(f"feature set ({pooling})", fs)
    return t


def register(app: typer.Typer) -> None:
    """Add extract, submit, worker and status to ``app``."""

    @app.command()
    def extract(
        dataset: Dataset,
        model: Model,
        prompt: Prompt = None,
        prompt_preset: PromptPreset = None,
        layers: Layers = "all",
        pooling: Pooling = None,
        batch_size: BatchSize = "auto",
        dtype: DType = None,
        device: Device = None,
        workers: Workers = None,
        split: Split = None,
        storage_dtype: StorageDType = "float16",
        trust_remote_code: TrustRemoteCode = False,
        quantization: Quantization = None,
        device_map: DeviceMap = None,
        commit_every: CommitEvery = 256,
        commit_seconds: CommitSeconds = 60.0,
        limit: Limit = None,
        study_preprocessing: StudyPreprocessing = False,
        no_progress: NoProgress = False,
        store: StoreOption = None,
    ) -> None:
        """Extract pooled per-layer activations of a dataset's images into the store (resumable)."""
        opts = _options(**{k: v for k, v in locals().items() if k not in ("store", "no_progress")})
        from medprobe.extractor.pipeline import Stopped
        from medprobe.extractor.pipeline import extract as run

        st = open_store(store)
        with graceful_stop() as stop:
            try:
                summary = run(st, opts, stop=stop, show_progress=not no_progress)
            except Stopped as s:
                console.print(summary_table(s.args[0]))
                err_console.print("stopped: everything forwarded is committed; rerun the same command to resume")
                raise typer.Exit(130) from None
        console.print(summary_table(summary))

    @app.command()
    def submit(
        dataset: Dataset,
        model: Model,
        prompt: Prompt = None,
        prompt_preset: PromptPreset = None,
        layers: Layers = "all",
        pooling: Pooling = None,
        batch_size: BatchSize = "auto",
        dtype: DType = None,
        device: Device = None,
        workers: Workers = None,
        split: Split = None,
        storage_dtype: StorageDType = "float16",
        trust_remote_code: TrustRemoteCode = False,
        quantization: Quantization = None,
        device_map: DeviceMap = None,
        commit_every: CommitEvery = 256,
        commit_seconds: CommitSeconds = 60.0,
        limit: Limit = None,
        study_preprocessing: StudyPreprocessing = False,
        shards: Annotated[int, typer.Option("--shards", min=1, help="Split the job into N shards for workers.")] = 16,
        store: StoreOption = None,
    ) -> None:
        """Queue an extraction job (same options as extract) for `medprobe worker`."""
        opts = _options(**{k: v for k, v in locals().items() if k not in ("store", "shards")})
        from medprobe.extractor.jobs import JobQueue
        from medprobe.extractor.pipeline import check_writable
        from medprobe.extractor.plan import check_dataset

        st = open_store(store)
        check_writable(st)
        check_dataset(st, opts.dataset)
        job = JobQueue(st).submit(opts, n_shards=shards)
        console.print(f"queued {job.job_id} ({opts.dataset}, {opts.model}, {shards} shards)")

    @app.command()
    def worker(
        poll: Annotated[float, typer.Option("--poll", help="Seconds between looks at an empty queue.")] = 5.0,
        heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between heartbeats.")] = 10.0,
        stale_after: Annotated[
            float, typer.Option("--stale-after", help="Take over a shard whose heartbeat is this many seconds old.")
        ] = 120.0,
        exit_when_idle: Annotated[bool, typer.Option("--exit-when-idle", help="Stop when the queue is empty.")] = False,
        no_progress: NoProgress = False,
        store: StoreOption = None,
    ) -> None:
        """Run queued extraction jobs until stopped (SIGTERM/SIGINT: commit the batch in flight, then exit)."""
        from medprobe.extractor.worker import run_worker

        st = open_store(store)
        with graceful_stop() as stop:
            stats = run_worker(
                st,
                stop=stop,
                poll_s=poll,
                heartbeat_s=heartbeat,
                stale_s=stale_after,
                exit_when_idle=exit_when_idle,
                show_progress=not no_progress,
                echo=err_console.print,
            )
        console.print(
            f"worker {stats.worker_id}: {stats.shards_done} shards, {stats.images_committed:,} images committed, "
            f"{stats.failures} failures{', stopped' if stats.stopped else ''}"
        )

    @app.command()
    def status(
        stale_after: Annotated[float, typer.Option("--stale-after", help="Heartbeat age that counts as dead.")] = 120.0,
        store: StoreOption = None,
    ) -> None:
        """Show queued jobs (shards done/running/pending, images, rates) and recent extraction runs."""
        from medprobe.extractor.status import job_rows, recent_runs

        st = open_store(store, create=False)
        jobs = job_rows(st, stale_s=stale_after)
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
        runs = recent_runs(st)
        if runs:
            r = Table(title="recent extraction runs")
            for col in ("run", "status", "started", "images", "images/s", "failures"):
                r.add_column(col)
            for row in runs:
                r.add_row(*(str(row[k]) for k in ("run", "status", "started", "images", "rate", "failures")))
            console.print(r)
