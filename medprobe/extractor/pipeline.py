"""One extraction: plan what is missing, read -> forward -> commit, and summarise the stages.

``extract(store, options)`` is what ``medprobe extract`` and the queue worker run; ``run_extraction``
is the loop for an already loaded adapter (the worker reuses one adapter across shards).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from medprobe.adapters.adapter import POOLINGS, Adapter
from medprobe.adapters.device_decode import DevicePreprocess, torchvision_available
from medprobe.adapters.models.tokens import TOKENS
from medprobe.errors import InvalidInputError
from medprobe.extractor.cpu_memory import keep_freed_memory
from medprobe.extractor.feature_set import feature_set_rows, token_feature_set_row
from medprobe.extractor.loader import ImageRefs, LoadedBatch, finish_on_device, make_loader
from medprobe.extractor.plan import Plan, check_dataset, plan_images
from medprobe.extractor.runner import OutOfMemory, Runner, free_device_memory, is_oom
from medprobe.extractor.writer import Committer, HostBatch
from medprobe.progress import progress_bar
from medprobe.schemas import COMPUTE_DTYPES, STORAGE_DTYPES, FeatureSetRow

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

logger = logging.getLogger(__name__)
AUTO_START = {"cuda": 256, "cpu": 16}  # first batch size tried by --batch-size auto
# --tokens: at most this many bytes of token rows wait in the committer's buffer (float32 on the host)
TOKEN_BUFFER_BYTES = 256 * 2**20
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}


class ExtractOptions(BaseModel):
    """Everything ``medprobe extract`` / ``submit`` accept; JSON-serialisable for the job queue."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    model: str
    prompt: str | None = None
    prompt_preset: str | None = None
    layers: str = "all"
    pooling: list[str] | None = None  # None: the adapter's default pooling
    batch_size: int | Literal["auto"] = "auto"
    dtype: str | None = None  # None: bf16 on CUDA, fp32 on CPU
    device: str | None = None  # None: cuda when available
    # named as the options (--decode-workers, --split); queued jobs of earlier versions say workers / splits
    decode_workers: int | None = Field(None, validation_alias=AliasChoices("decode_workers", "workers"))
    split: list[str] | None = Field(None, validation_alias=AliasChoices("split", "splits"))
    storage_dtype: str = "float16"
    trust_remote_code: bool = False
    allow_pickle: bool = False  # .bin/.pth weights when a checkpoint has no safetensors
    quantization: str | None = None
    device_map: str | None = None
    commit_every: int = Field(256, ge=1)
    commit_seconds: float = Field(60.0, gt=0)
    limit: int | None = Field(None, ge=1)
    study_preprocessing: bool = False
    decode: Literal["auto", "pil", "torchvision"] = "auto"
    tokens: bool = False  # also every token of the layers' grids (a feature set of pooling tokens)
    max_bytes: int | None = Field(None, ge=1)  # refuse an extraction that would write more

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            if not v.isdigit() or int(v) < 1:
                raise ValueError(f"--batch-size must be a positive integer or 'auto', got {v!r}")
            return int(v)
        return v

    def resolved_device(self) -> str:
        if self.device is not None:
            if self.device.startswith("cuda") and not torch.cuda.is_available():
                raise InvalidInputError(f"--device {self.device}: no CUDA device is available; use --device cpu")
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self) -> str:
        dtype = self.dtype or ("bf16" if self.resolved_device().startswith("cuda") else "fp32")
        if dtype not in COMPUTE_DTYPES:
            raise InvalidInputError(f"--dtype {dtype!r}: choose from {', '.join(COMPUTE_DTYPES)}")
        return dtype

    def resolved_workers(self) -> int:
        if self.decode_workers is not None:
            if self.decode_workers < 0:
                raise InvalidInputError("--decode-workers must be 0 or more")
            return self.decode_workers
        return default_workers(os.cpu_count() or 1)


def default_workers(cores: int) -> int:
    """Decode workers by default: none on 1-2 cores (a worker process would take a core from the forward pass, which
    measured 1.3x slower on 2 cores for EfficientNet-Lite0), else one per core but one, at most 8."""
    return 0 if cores <= 2 else min(8, cores - 1)


@dataclass
class Request:
    """What one extraction asks of a loaded adapter."""

    layers: list[int]
    poolings: list[str]
    prompt: str | None  # exact processor text (chat template applied), None for vision-only models
    raw_prompt: str | None  # what is given to the preprocessor
    feature_sets: dict[str, FeatureSetRow]  # pooling -> row

    @property
    def feature_set_ids(self) -> dict[str, str]:
        return {p: row.feature_set_id for p, row in self.feature_sets.items()}


class Stopped(KeyboardInterrupt):
    """Raised after a graceful stop (SIGTERM/SIGINT) once the in-flight batches are committed."""


def check_writable(store: FeatureStore) -> None:
    """Raise InvalidInputError when the store cannot be written (before any model is loaded)."""
    store.check_writable()


def load_model(options: ExtractOptions) -> Adapter:
    """Load the adapter named by ``options.model`` on the resolved device and dtype."""
    from medprobe.adapters.loading import load_adapter

    return load_adapter(
        options.model,
        device=options.resolved_device(),
        dtype=options.resolved_dtype(),
        trust_remote_code=options.trust_remote_code,
        quantization=options.quantization,
        device_map=options.device_map,
        allow_pickle=options.allow_pickle,
    )


def resolve_prompt(adapter: Adapter, options: ExtractOptions) -> str | None:
    """The prompt text for the preprocessor (--prompt or --prompt-preset), None for vision-only models."""
    from medprobe.adapters.prompts import resolve_prompt as prompt_text

    if not adapter.identity.takes_prompt:
        if options.prompt is not None or options.prompt_preset is not None:
            raise InvalidInputError(
                f"model {adapter.identity.model_id} ({adapter.identity.adapter}) is a vision encoder and takes "
                "no prompt; drop --prompt/--prompt-preset"
            )
        return None
    return prompt_text(options.prompt, options.prompt_preset)


def resolve_request(adapter: Adapter, options: ExtractOptions) -> Request:
    """Layers, poolings, prompt and the feature-set rows of one extraction; validates them against the model."""
    from medprobe.layerspec import parse_layers

    ident = adapter.identity
    layers = parse_layers(options.layers, ident.n_layers)
    poolings = list(dict.fromkeys(options.pooling or [ident.default_pooling]))
    unknown = [p for p in poolings if p not in POOLINGS]
    if unknown:
        raise InvalidInputError(f"unknown pooling(s) {unknown}; choose from {', '.join(POOLINGS)}")
    adapter.check_request(layers, poolings)
    if options.storage_dtype not in STORAGE_DTYPES:
        raise InvalidInputError(f"--storage-dtype {options.storage_dtype!r}: choose from {', '.join(STORAGE_DTYPES)}")
    raw_prompt = resolve_prompt(adapter, options)
    prompt = adapter.preprocessor.format_prompt(raw_prompt) if raw_prompt is not None else None
    rows = feature_set_rows(
        ident,
        prompt=prompt if prompt is not None else raw_prompt,
        poolings=poolings,
        compute_dtype=options.resolved_dtype(),
        storage_dtype=options.storage_dtype,
    )
    if options.tokens:
        rows[TOKENS] = _token_feature_set(adapter, options, layers, raw_prompt, prompt)
        poolings.append(TOKENS)
    return Request(layers=layers, poolings=poolings, prompt=prompt, raw_prompt=raw_prompt, feature_sets=rows)


def _token_feature_set(adapter: Adapter, options: ExtractOptions, layers: list[int], raw_prompt: str | None,
                       prompt: str | None) -> FeatureSetRow:  # fmt: skip
    """The tokens feature set: the layers' grids read off one forward pass of a grey image."""
    from PIL import Image

    ident = adapter.identity
    grids = adapter.token_grids(adapter.preprocess([Image.new("RGB", (224, 224), (128, 128, 128))], raw_prompt))
    no_grid = [layer for layer in layers if layer not in grids]
    if no_grid:
        have = f"{min(grids)}-{max(grids)}" if grids else "none"
        raise InvalidInputError(f"--tokens: layer(s) {no_grid} of {ident.model_id} have no token grid (an embedding "
                                f"is one vector per image); its layers with a grid: {have}")  # fmt: skip
    return token_feature_set_row(ident, grids, prompt=prompt if prompt is not None else raw_prompt,
                                 compute_dtype=options.resolved_dtype(), storage_dtype=options.storage_dtype)


def planned_bytes(request: Request, plan: Plan, storage_dtype: str) -> tuple[int, int]:
    """``(bytes per image, bytes in all)`` an extraction writes: every feature set and layer of the images to do,
    less the rows partly done images have."""
    itemsize = ITEMSIZE.get(storage_dtype, 4)
    width = {(row.feature_set_id, layer): row.hidden_sizes[layer] * itemsize for row in request.feature_sets.values()
             for layer in request.layers if layer < len(row.hidden_sizes)}  # fmt: skip
    per_image = sum(width.values())
    done = sum(width.get(key, 0) for rows in plan.present.values() for key in rows)
    return per_image, per_image * plan.n_todo - done


@dataclass
class _BatchSize:
    """The images per forward pass; ``auto`` halves it on out-of-memory down to one image."""

    value: int
    auto: bool
    device: torch.device
    model: str

    def halve_or_raise(self, error: BaseException) -> None:
        """After an out-of-memory error: free the device and halve, or raise OutOfMemory with what to do."""
        free_device_memory(self.device)
        if not self.auto or self.value == 1:
            hint = (
                "pass a smaller --batch-size or --batch-size auto"
                if not self.auto
                else "even one image does not fit: use --dtype bf16/fp16, --quantization or --device-map auto"
            )
            raise OutOfMemory(
                f"out of memory on {self.device} at batch size {self.value} ({self.model}); {hint}"
            ) from error
        self.value = max(1, self.value // 2)


@dataclass
class _Progress:
    """How far an extraction got: images handed to the committer, a graceful stop, and seconds per input stage."""

    pos: int = 0
    stopped: bool = False
    stages: dict[str, float] = field(
        default_factory=lambda: {"read": 0.0, "decode": 0.0, "preprocess": 0.0, "wait_for_data": 0.0}
    )

    def add_stages(self, batch: LoadedBatch, waited: float) -> None:
        self.stages["wait_for_data"] += waited
        self.stages["read"] += batch.read_s
        self.stages["decode"] += batch.decode_s
        self.stages["preprocess"] += batch.preprocess_s


@dataclass
class DecodePath:
    """Where a run decodes and preprocesses: ``preprocess`` set means on ``device`` (torchvision), else PIL."""

    preprocess: DevicePreprocess | None
    device: torch.device
    description: str


def resolve_decode(adapter: Adapter, options: ExtractOptions) -> DecodePath:
    """The decode path ``options.decode`` asks for with this model (``auto``: the device when the model runs on
    CUDA and can preprocess there); ``torchvision`` that cannot run is refused with the reason."""
    device = adapter.device
    if options.decode == "pil":
        return DecodePath(None, device, "pil in the loader workers")
    if options.decode == "auto" and device.type != "cuda":
        return DecodePath(None, device, "pil in the loader workers (auto: the model runs on the CPU)")
    reason = None
    preprocess = None
    if options.study_preprocessing:
        reason = "--study-preprocessing resizes with PIL"
    elif not torchvision_available():
        reason = "torchvision does not import beside this torch"
    else:
        preprocess = adapter.device_preprocess()
        if preprocess is None:
            reason = f"the {adapter.identity.adapter} preprocessing has no tensor form"
    if options.decode == "torchvision":
        if preprocess is None:
            raise InvalidInputError(f"--decode torchvision: {reason}; use --decode pil (or auto)")
        return DecodePath(preprocess, device, f"torchvision on {device}")
    if preprocess is None:
        return DecodePath(None, device, f"pil in the loader workers (auto: {reason})")
    return DecodePath(preprocess, device, f"torchvision on {device} (nvJPEG)")


def _forward_batches(
    loader: Iterable[LoadedBatch],
    runner: Runner,
    committer: Committer,
    size: _BatchSize,
    progress: _Progress,
    advance: Callable[[int], None],
    stop: threading.Event | None,
    decode: DecodePath | None = None,
) -> bool:
    """Forward every batch of ``loader`` and hand it to the committer; True when out of memory halved the batch
    size (the caller restarts the loader at ``progress.pos``). With a device ``decode`` path each batch is first
    decoded and preprocessed on the device."""
    t_wait = time.perf_counter()
    for loaded in loader:
        batch = loaded
        waited = time.perf_counter() - t_wait
        arrays: dict[str, dict[int, np.ndarray]] = {}
        if loaded.image_hashes:
            try:
                if decode is not None and decode.preprocess is not None:
                    batch = finish_on_device(loaded, decode.preprocess, decode.device)
                if batch.image_hashes:
                    arrays = runner.forward(batch.inputs, len(batch.image_hashes))
            except Exception as e:
                if not is_oom(e):
                    raise
                size.halve_or_raise(e)
                return True
        progress.add_stages(batch, waited)
        committer.put(HostBatch(batch.image_hashes, arrays, batch.failures))
        progress.pos += batch.n_refs
        advance(batch.n_refs)
        if stop is not None and stop.is_set():
            progress.stopped = True
            return False
        t_wait = time.perf_counter()
    return False


def _summary(
    request: Request, plan: Plan, runner: Runner, committer: Committer, size: _BatchSize, workers: int,
    progress: _Progress, wall: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "feature_sets": request.feature_set_ids,
        "layers": request.layers,
        "images_selected": plan.n_selected,
        "images_skipped": plan.n_complete,
        "images_todo": plan.n_todo,
        "images_forwarded": runner.n_images,
        "images_committed": committer.n_committed,
        "failures": committer.n_failures,
        "failures_by_reason": dict(sorted(committer.failures_by_reason.items())),
        "first_missing": committer.first_missing,
        "forward_batches": runner.n_forward,
        "segments": committer.n_segments,
        "batch_size": size.value,
        "workers": workers,
        "seconds": round(wall, 3),
        "images_per_s": round(runner.n_images / wall, 2) if wall > 0 else 0.0,
        "stage_seconds": {
            **{k: round(v, 3) for k, v in progress.stages.items()},
            "forward": round(runner.forward_s, 3),
            "write": round(committer.write_s, 3),
            "wait_for_writer": round(committer.put_wait_s, 3),
        },
        "stopped": progress.stopped,
    }


def run_extraction(
    store: FeatureStore,
    adapter: Adapter,
    request: Request,
    options: ExtractOptions,
    *,
    run_id: str | None = None,
    shard: tuple[int, int] | None = None,
    stop: threading.Event | None = None,
    show_progress: bool = True,
    on_commit: Callable[[int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    plan: Plan | None = None,
) -> dict[str, Any]:
    """Extract every image of the selection that misses a requested row; returns the summary.

    Batches already forwarded are committed before this returns, whether it finishes, is stopped
    (``stop`` set: raises :class:`Stopped` afterwards) or fails.
    """
    t_start = time.perf_counter()
    if plan is None:  # a caller that passes its plan has registered the feature sets it planned for
        for row in request.feature_sets.values():
            store.register_feature_set(row)
        fs_ids = list(request.feature_set_ids.values())
        plan = plan_images(
            store, options.dataset, fs_ids, request.layers, splits=options.split, shard=shard, limit=options.limit
        )
    per_image, total = planned_bytes(request, plan, options.storage_dtype)
    _check_bytes(options, plan.n_todo, per_image, total, show_progress)
    commit_every = options.commit_every
    if TOKENS in request.poolings:  # wide rows: bound the committer's buffer in bytes, not only in images
        host_bytes = per_image * 4 // ITEMSIZE.get(options.storage_dtype, 4)
        commit_every = max(1, min(commit_every, TOKEN_BUFFER_BYTES // max(1, host_bytes)))
    device = adapter.device
    if device.type == "cpu":
        keep_freed_memory()
    auto = options.batch_size == "auto"
    if not auto:
        start = int(options.batch_size)
    elif device.type == "cuda":
        start = AUTO_START["cuda"]
    else:
        start = getattr(adapter, "cpu_batch_size", None) or AUTO_START["cpu"]
    size = _BatchSize(start, auto, device, options.model)
    workers = options.resolved_workers()
    decode = resolve_decode(adapter, options)
    logger.info("extract %s: decoding with %s", options.dataset, decode.description)
    runner = Runner(adapter, request.layers, request.poolings, request.feature_set_ids,
                    {p: row.hidden_sizes for p, row in request.feature_sets.items()})  # fmt: skip
    committer = Committer(
        store,
        storage_dtype=options.storage_dtype,
        commit_every=commit_every,
        commit_seconds=options.commit_seconds,
        present=plan.present,
        run_id=run_id,
        dataset=options.dataset,
        on_commit=on_commit,
        before_commit=before_commit,
    )
    progress = _Progress()
    try:
        with progress_bar("images", disable=not show_progress) as bar:
            task = bar.add_task(f"extract {options.dataset}", total=plan.n_todo)
            restart = True
            while restart and progress.pos < plan.n_todo and not progress.stopped:
                on_device = decode.preprocess is not None
                refs = ImageRefs(
                    plan.todo, store.url, start=progress.pos, study_preprocessing=options.study_preprocessing,
                    device_decode=on_device,
                )  # fmt: skip
                loader = make_loader(
                    refs, None if on_device else adapter.preprocessor, request.raw_prompt, batch_size=size.value,
                    workers=workers, pin_memory=device.type == "cuda",
                )  # fmt: skip
                restart = _forward_batches(
                    loader, runner, committer, size, progress, lambda n: bar.advance(task, n), stop, decode
                )
                del loader
    finally:
        committer.close()
    summary = _summary(request, plan, runner, committer, size, workers, progress, time.perf_counter() - t_start)
    summary["decode"] = decode.description
    summary["bytes_planned"] = total
    logger.info("extract %s: stage seconds %s", options.dataset, summary["stage_seconds"])
    if progress.stopped:
        raise Stopped(summary)
    return summary


def _check_bytes(options: ExtractOptions, n_images: int, per_image: int, total: int, show_progress: bool) -> None:
    """Say what the extraction will write before it starts; refuse beyond ``--max-bytes``."""
    from rich.console import Console

    from medprobe.sizes import human_bytes

    what = f"{human_bytes(total)} ({n_images:,} images to do, up to {human_bytes(per_image)} each)"
    if options.max_bytes is not None and total > options.max_bytes:
        raise InvalidInputError(f"--max-bytes {human_bytes(options.max_bytes)}: this extraction would write {what}; "
                                "raise the limit, or ask for fewer --layers, --split or --limit")  # fmt: skip
    if show_progress and n_images:
        Console(stderr=True).print(f"extract {options.dataset}: will write about {what}", highlight=False)


def extract_shard(
    store: FeatureStore,
    options: ExtractOptions,
    *,
    adapter: Adapter | None = None,
    shard: tuple[int, int] = (0, 1),
    engine: str = "local",
    stop: threading.Event | None = None,
    show_progress: bool = True,
    on_start: Callable[[str, Plan], None] | None = None,
    on_commit: Callable[[int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    run_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The shard function every engine runs (this process, Ray actors, SLURM tasks, queue workers): extract what
    shard ``shard = (i, n)`` of the selection still misses (the whole selection with the default ``(0, 1)``),
    recorded as one ``runs`` row; returns the summary with its ``run_id``. Idempotent: a second run finds the rows
    committed. ``on_start(run_id, plan)`` is called once planned; ``on_commit`` after each commit and
    ``before_commit`` before it (a queue worker keeps its claim alive with them)."""
    from medprobe.featurestore import start_run

    check_writable(store)
    check_dataset(store, options.dataset)
    adapter = adapter or load_model(options)
    request = resolve_request(adapter, options)
    for row in request.feature_sets.values():
        store.register_feature_set(row)
    plan = plan_images(store, options.dataset, list(request.feature_set_ids.values()), request.layers,
                       splits=options.split, shard=None if shard == (0, 1) else shard, limit=options.limit)  # fmt: skip
    placed = {} if shard == (0, 1) and engine == "local" else {"engine": engine, "shard": shard[0],
                                                                  "n_shards": shard[1], "host_pid": os.getpid()}
    params = {**options.model_dump(), **placed, "resolved_layers": request.layers,
              "feature_sets": request.feature_set_ids, **(run_params or {})}  # fmt: skip
    with start_run(store, "extract", params) as run:
        if on_start is not None:
            on_start(run.run_id, plan)
        try:
            run.summary.update(run_extraction(
                store, adapter, request, options, run_id=run.run_id, shard=None if shard == (0, 1) else shard,
                stop=stop, show_progress=show_progress, on_commit=on_commit, before_commit=before_commit, plan=plan,
            ))  # fmt: skip
        except Stopped as s:
            run.summary.update(s.args[0])
            raise
        run.summary["run_id"] = run.run_id
    return run.summary


def extract(
    store: FeatureStore,
    options: ExtractOptions,
    *,
    stop: threading.Event | None = None,
    show_progress: bool = True,
    adapter: Adapter | None = None,
) -> dict[str, Any]:
    """One whole extraction in this process (the shard function with the single shard); returns the summary."""
    return extract_shard(store, options, adapter=adapter, stop=stop, show_progress=show_progress)
