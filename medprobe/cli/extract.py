"""Commands of the extractor: extract, submit, worker, status."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from medprobe.cli.common import console, err_console
from medprobe.cli.options import (
    AllowPickleOpt,
    DatasetOpt,
    DeviceOpt,
    ModelOpt,
    Output,
    ProgressOutput,
    SplitOpt,
    TrustRemoteCodeOpt,
    layers_option,
    with_group,
)
from medprobe.cli.tables import key_value_table
from medprobe.schemas.vocab import ComputeDType, Engine, ImageDecode, Quantization, SlurmCluster, StorageDType
from medprobe.workflows import extraction as wf
from medprobe.workflows.extraction import SUMMARY_KEYS

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
    tokens: Annotated[
        bool,
        typer.Option("--tokens", help="Also store every token of the layers' grids (for medprobe heatmap)."),
    ] = False
    max_bytes: Annotated[
        str | None,
        typer.Option("--max-bytes", help="Refuse to write more than this, e.g. 20G (the plan is printed first)."),
    ] = None


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
    slurm_cluster: Annotated[
        SlurmCluster,
        typer.Option(
            "--slurm-cluster",
            help="slurm: submitit's executor: slurm (sbatch), or local / debug (this machine, to try without one).",
        ),
    ] = SlurmCluster.slurm


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


def summary_table(summary: dict[str, Any]) -> Table:
    """The final summary: counts, rate and seconds per stage."""
    items = [
        (key.replace("_", " "), f"{summary[key]:,}" if isinstance(summary[key], int) else str(summary[key]))
        for key in SUMMARY_KEYS
        if key in summary
    ]
    stages = summary.get("stage_seconds", {})
    items += [(f"{stage.replace('_', ' ')} s", f"{sec:,.2f}") for stage, sec in stages.items()]
    items += [(f"feature set ({pooling})", fs) for pooling, fs in summary.get("feature_sets", {}).items()]
    return key_value_table("extraction summary", items)


@with_group(ExtractSettings, "settings")
@with_group(EngineOptions, "eng")
@with_group(ProgressOutput, "output")
def extract(
    output: ProgressOutput,
    settings: ExtractSettings,
    eng: EngineOptions,
) -> None:
    """Extract pooled per-layer activations of a dataset's images into the store (resumable)."""
    output.check()
    options = {**dataclasses.asdict(settings), **dataclasses.asdict(eng)}
    missing: wf.ImagesMissingError | None = None
    with graceful_stop() as stop:
        try:
            result = wf.extract(**options, no_progress=output.quiet,
                                store=output.store, stop=stop)  # fmt: skip
        except wf.ExtractionStopped as s:
            console.print(summary_table(s.summary))
            err_console.print("stopped: everything forwarded is committed; rerun the same command to resume")
            raise typer.Exit(130) from None
        except wf.ImagesMissingError as e:  # show what was extracted, then fail
            result, missing = e.result, e
    doc = result.to_dict()
    if "engine" in doc:
        title = f"extraction on {doc['engine']}"
        show = lambda: console.print(key_value_table(title, [(k, str(v)) for k, v in doc.items()]))  # noqa: E731
    else:
        show = lambda: console.print(summary_table(doc))  # noqa: E731
    output.emit(rows=result.to_arrow(), document=doc, show=show)
    if missing is not None:
        raise missing


@with_group(ExtractSettings, "settings")
@with_group(Output, "output")
def submit(
    output: Output,
    settings: ExtractSettings,
    shards: Annotated[int, typer.Option("--shards", min=1, help="Split the job into N shards for workers.")] = 16,
) -> None:
    """Queue an extraction job (same options as extract) for `medprobe worker`."""
    output.check()
    result = wf.submit(**dataclasses.asdict(settings), shards=shards, store=output.store)
    text = f"queued {result.job_id} ({result.dataset}, {result.model}, {result.shards} shards)"
    output.render(result, show=lambda: console.print(text))


@with_group(ProgressOutput, "output")
def worker(
    output: ProgressOutput,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between looks at an empty queue.")] = 5.0,
    heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between heartbeats.")] = 10.0,
    stale_after: Annotated[
        float, typer.Option("--stale-after", help="Take over a shard whose heartbeat is this many seconds old.")
    ] = 120.0,
    exit_when_idle: Annotated[bool, typer.Option("--exit-when-idle", help="Stop when the queue is empty.")] = False,
) -> None:
    """Run queued extraction jobs until stopped (SIGTERM/SIGINT: commit the batch in flight, then exit)."""
    output.check()
    with graceful_stop() as stop:
        stats = wf.worker(poll=poll, heartbeat=heartbeat, stale_after=stale_after, exit_when_idle=exit_when_idle,
                          no_progress=output.quiet, store=output.store, stop=stop,
                          echo=err_console.print)  # fmt: skip
    text = (
        f"worker {stats.worker_id}: {stats.shards_done} shards, {stats.images_committed:,} images committed, "
        f"{stats.failures} failures{', stopped' if stats.stopped else ''}"
    )
    output.render(stats, show=lambda: console.print(text))


def _print_status(result: wf.StatusResult) -> None:
    t = Table(title=f"extraction jobs in {result.store_url}")
    for col in ("job", "dataset", "model", "state", "shards done", "running", "pending", "images", "images/s"):
        t.add_column(col, justify="right" if col in ("images", "images/s") else "left")
    for r in result.jobs:
        t.add_row(*(str(r[k]) for k in ("job", "dataset", "model", "state", "done", "running", "pending")),
                  f"{r['images']:,}", f"{r['rate']:,.1f}")  # fmt: skip
    console.print(t if result.jobs else "no queued jobs")
    if result.runs:
        recent = Table(title="recent extraction runs")
        for col in ("run", "engine", "status", "started", "images", "images/s", "failures"):
            recent.add_column(col)
        for row in result.runs:
            recent.add_row(*(str(row[k]) for k in ("run", "engine", "status", "started", "images", "rate", "failures")))
        console.print(recent)


@with_group(Output, "output")
def status(
    output: Output,
    stale_after: Annotated[float, typer.Option("--stale-after", help="Heartbeat age that counts as dead.")] = 120.0,
) -> None:
    """Show queued jobs (shards done/running/pending, images, rates) and recent extraction runs."""
    result = wf.status(stale_after=stale_after, store=output.store)
    output.emit(rows=result.jobs, document=result.to_dict(), show=lambda: _print_status(result))


def register(app: typer.Typer) -> None:
    """Add extract, submit, worker and status to ``app``."""
    for command in (extract, submit, worker, status):
        app.command()(command)
