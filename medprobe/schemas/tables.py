"""Arrow schemas and pydantic row models of every persisted table.

Each table is a directory of immutable Parquet fragments in the store. A table's
``key`` lists the columns that identify one logical row; when a key was written
more than once, readers see exactly one row: the first by ``order`` (ties broken by
every remaining column), which makes the choice deterministic whatever the order in
which fragments are listed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

UTC = dt.UTC
TS = pa.timestamp("us", tz="UTC")


def utcnow() -> dt.datetime:
    """Timezone-aware current time, truncated to microseconds (Arrow's unit)."""
    return dt.datetime.now(UTC)


class Row(BaseModel):
    """Base of the row models: strict field names, no extras."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- images
class ImageRow(Row):
    """One distinct image, identified by the sha256 of its file bytes."""

    image_hash: str = Field(min_length=64, max_length=64)
    uri: str  # absolute path / fsspec URL, or "store:" + path relative to the store root
    in_store: bool = False  # the bytes were copied into the store's blob area
    width: int
    height: int
    mode: str  # PIL mode: L, I;16, RGB, ...
    bit_depth: int
    format: str  # PNG, JPEG, TIFF, DICOM, ...
    n_bytes: int
    ingested_at: dt.datetime = Field(default_factory=utcnow)


IMAGES = pa.schema(
    [
        ("image_hash", pa.string()),
        ("uri", pa.string()),
        ("in_store", pa.bool_()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
        ("bit_depth", pa.int16()),
        ("format", pa.string()),
        ("n_bytes", pa.int64()),
        ("ingested_at", TS),
    ]
)


# --------------------------------------------------------------------------- datasets and tasks
class DatasetRow(Row):
    """A named collection of images; one row per ingest that changed it."""

    dataset: str
    format: str  # the ingest format (csv, imagefolder, medmnist, nct-crc, ...)
    source: str  # where it was ingested from
    options: str = "{}"  # JSON of the ingest options
    split_policy: str  # "shipped" or e.g. "generated:test=0.2,val=0.1,seed=0,group=patient_id"
    created_at: dt.datetime = Field(default_factory=utcnow)


DATASETS = pa.schema(
    [
        ("dataset", pa.string()),
        ("format", pa.string()),
        ("source", pa.string()),
        ("options", pa.string()),
        ("split_policy", pa.string()),
        ("created_at", TS),
    ]
)

TaskType = Literal["binary", "multiclass", "ordinal", "multilabel"]
PrimaryMetric = Literal["macro_f1", "macro_auc"]


class TaskRow(Row):
    """A prediction task declared by a dataset: which label, which classes, which metric."""

    dataset: str
    task: str
    type: TaskType
    label_columns: list[str]  # one column, or one per finding for multilabel
    class_names: list[str]  # label values in index order; findings for multilabel
    primary_metric: PrimaryMetric
    created_at: dt.datetime = Field(default_factory=utcnow)


TASKS = pa.schema(
    [
        ("dataset", pa.string()),
        ("task", pa.string()),
        ("type", pa.string()),
        ("label_columns", pa.list_(pa.string())),
        ("class_names", pa.list_(pa.string())),
        ("primary_metric", pa.string()),
        ("created_at", TS),
    ]
)


class DatasetImageRow(Row):
    """An image's membership in a dataset: split, patient/group and labels."""

    dataset: str
    image_hash: str
    split: str  # train | val | test
    group_id: str | None = None  # patient / lesion id; None when the dataset has none
    source_path: str  # the path (or key) of the image inside the source collection
    labels: str  # JSON object {task: value}; value is a class name, or a list of findings
    ingested_at: dt.datetime = Field(default_factory=utcnow)
    retired: bool = False  # format 2: the member left the dataset (its file's bytes changed); history kept
    # format 4: what the row is: an image (image_hash is its sha256), or a VQA item registered as a probe row by
    # `vqa run --save-activations` (image_hash is then the item's key, not an image's hash)
    row_kind: str = "image"
    # format 5: the ingest source (absolute path or URL) the member was last ingested from; NULL in older rows
    source: str | None = None
    # format 5: per-image metadata as a JSON object of typed values (numbers stay numbers, empty is null), e.g.
    # {"age": 63, "sex": "F"}; SQL: metadata->>'sex', (metadata->>'age')::DOUBLE. NULL: none kept
    metadata: str | None = None


DATASET_IMAGES = pa.schema(
    [
        ("dataset", pa.string()),
        ("image_hash", pa.string()),
        ("split", pa.string()),
        ("group_id", pa.string()),
        ("source_path", pa.string()),
        ("labels", pa.string()),
        ("ingested_at", TS),
        ("retired", pa.bool_()),  # absent from format-1 fragments: read as false
        ("row_kind", pa.string()),  # absent from format-1..3 fragments: read as 'image' (format-3 VQA rows: migrated)
        ("source", pa.string()),  # absent from format-1..4 fragments: NULL
        ("metadata", pa.string()),  # JSON object; absent from format-1..4 fragments: NULL
    ]
)


# --------------------------------------------------------------------------- features
class FeatureSetRow(Row):
    """Everything that changes the numbers of a feature set, hashed into its id."""

    feature_set_id: str
    model_id: str  # Hugging Face id, local path or plugin spec
    model_revision: str  # commit hash, or sha256 of the weights when there is none
    adapter: str  # the adapter that produced it (clip, llava, qwen2-vl, efficientnet-lite0, ...)
    preprocessing: str  # canonical JSON of the processor / transform configuration
    prompt: str | None  # None for vision-only encoders
    pooling: str  # last | image_mean | mean | cls | spatial_mean | tokens (every token of a grid, `extract --tokens`)
    layer_semantics: str  # what layer index i means, in words
    n_layers: int
    hidden_sizes: list[int]  # per layer index (tokens: the row width, tokens x hidden; 0 for a layer without a grid)
    compute_dtype: str  # bf16 | fp16 | fp32
    storage_dtype: str  # float16 | bfloat16 | float32
    created_at: dt.datetime = Field(default_factory=utcnow)
    # format 6, pooling tokens: {layer: {n_prefix, rows, cols, hidden, pooled}} (medprobe.adapters.models.tokens):
    # a row is n_prefix prefix tokens, then a rows x cols grid in row-major order; pooled names the pooling that is
    # the grid's mean
    token_grid: str | None = None


FEATURE_SETS = pa.schema(
    [
        ("feature_set_id", pa.string()),
        ("model_id", pa.string()),
        ("model_revision", pa.string()),
        ("adapter", pa.string()),
        ("preprocessing", pa.string()),
        ("prompt", pa.string()),
        ("pooling", pa.string()),
        ("layer_semantics", pa.string()),
        ("n_layers", pa.int32()),
        ("hidden_sizes", pa.list_(pa.int32())),
        ("compute_dtype", pa.string()),
        ("storage_dtype", pa.string()),
        ("created_at", TS),
        ("token_grid", pa.string()),  # format 6: absent from older fragments, read as NULL
    ]
)


class ActivationRow(Row):
    """Manifest row: where the activation of one (feature set, layer, image) lives."""

    feature_set_id: str
    layer: int
    image_hash: str
    segment_id: str
    row: int


ACTIVATIONS = pa.schema(
    [
        ("feature_set_id", pa.string()),
        ("layer", pa.int32()),
        ("image_hash", pa.string()),
        ("segment_id", pa.string()),
        ("row", pa.int32()),
    ]
)


# --------------------------------------------------------------------------- bookkeeping
class FailureRow(Row):
    """Something that could not be read or computed, kept so it can be fixed and retried."""

    failure_id: str
    stage: str  # ingest | extract | train
    run_id: str | None = None
    dataset: str | None = None
    path: str | None = None  # the file / row that failed
    image_hash: str | None = None
    reason: str  # short category: missing, truncated, not_an_image, decompression_bomb, ...
    error: str  # the exception text
    at: dt.datetime = Field(default_factory=utcnow)


FAILURES = pa.schema(
    [
        ("failure_id", pa.string()),
        ("stage", pa.string()),
        ("run_id", pa.string()),
        ("dataset", pa.string()),
        ("path", pa.string()),
        ("image_hash", pa.string()),
        ("reason", pa.string()),
        ("error", pa.string()),
        ("at", TS),
    ]
)

RunStatus = Literal["running", "finished", "failed", "interrupted"]
# what the ``runs`` view shows for a run stored as running whose process is gone (on this host)
ABANDONED_STATUS_SQL = (
    "CASE WHEN status = 'running' AND medprobe_process_gone(host, pid) THEN 'abandoned' ELSE status END"
)


class RunRow(Row):
    """Who ran what, when, with which versions. Written at start and again at the end."""

    run_id: str
    kind: str  # ingest | extract | train | sweep | compare | ...
    command: str  # the command line
    status: RunStatus
    user: str
    host: str
    started_at: dt.datetime
    updated_at: dt.datetime = Field(default_factory=utcnow)
    medprobe_version: str
    versions: str  # JSON {package: version}
    params: str = "{}"  # JSON of the run's options
    summary: str = "{}"  # JSON of the run's outcome (counts, rates)
    pid: int | None = None  # format 2: the process, so a run whose process died shows as abandoned
    # format 5: the transactions the run committed; `store verify` checks their commit markers still exist
    transactions: list[str] | None = None


RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("kind", pa.string()),
        ("command", pa.string()),
        ("status", pa.string()),
        ("user", pa.string()),
        ("host", pa.string()),
        ("started_at", TS),
        ("updated_at", TS),
        ("medprobe_version", pa.string()),
        ("versions", pa.string()),
        ("params", pa.string()),
        ("summary", pa.string()),
        ("pid", pa.int64()),  # absent from format-1 fragments: NULL
        ("transactions", pa.list_(pa.string())),  # absent from format-1..4 fragments: NULL
    ]
)


# --------------------------------------------------------------------------- trainer output
class ProbeResultRow(Row):
    """One fitted probe (a feature set, a layer, a task) and its evaluation."""

    run_id: str
    probe_id: str
    feature_set_id: str
    layer: int
    dataset: str
    task: str
    solver: str  # torch | sklearn | cuml (method probe); knn; the scoring rule of zeroshot (softmax | sigmoid)
    c: float | None  # chosen inverse regularisation strength (None: knn and zeroshot rows)
    c_grid: list[float]
    selection: str  # "cv:5:grouped" or "val"
    cv_scores: str  # JSON {C: [fold scores]}
    train_fraction: float = 1.0
    seed: int = 0
    n_train: int
    n_test: int
    class_names: list[str]
    metrics: str  # JSON {metric: {value, ci_low, ci_high}}
    fit_seconds: float
    weights_uri: str | None = None
    versions: str = "{}"
    created_at: dt.datetime = Field(default_factory=utcnow)
    method: str = "probe"  # format 3: probe | knn | zeroshot (absent from older fragments: probe)
    k: int | None = None  # format 3: the neighbours of a knn row, chosen by CV on training rows
    # format 5: the probe whose stored weights this row applies to other data (`medprobe predict`); None: fitted here
    applied_from: str | None = None


PROBE_RESULTS = pa.schema(
    [
        ("run_id", pa.string()),
        ("probe_id", pa.string()),
        ("feature_set_id", pa.string()),
        ("layer", pa.int32()),
        ("dataset", pa.string()),
        ("task", pa.string()),
        ("solver", pa.string()),
        ("c", pa.float64()),
        ("c_grid", pa.list_(pa.float64())),
        ("selection", pa.string()),
        ("cv_scores", pa.string()),
        ("train_fraction", pa.float64()),
        ("seed", pa.int64()),
        ("n_train", pa.int64()),
        ("n_test", pa.int64()),
        ("class_names", pa.list_(pa.string())),
        ("metrics", pa.string()),
        ("fit_seconds", pa.float64()),
        ("weights_uri", pa.string()),
        ("versions", pa.string()),
        ("created_at", TS),
        ("method", pa.string()),  # absent from format-2 fragments: 'probe'
        ("k", pa.int64()),
        ("applied_from", pa.string()),  # absent from format-1..4 fragments: NULL
    ]
)


class PredictionRow(Row):
    """A probe's predicted probabilities for one test image."""

    run_id: str
    probe_id: str
    image_hash: str
    y_true: str  # JSON: class index, or list of finding indicators
    probabilities: list[float]


PREDICTIONS = pa.schema(
    [
        ("run_id", pa.string()),
        ("probe_id", pa.string()),
        ("image_hash", pa.string()),
        ("y_true", pa.string()),
        ("probabilities", pa.list_(pa.float32())),
    ]
)


class ProbeComparisonRow(Row):
    """Paired comparison of two probes on the same test images, for one metric (A minus B)."""

    run_id: str
    probe_a: str
    probe_b: str
    feature_set_a: str
    feature_set_b: str
    layer_a: int
    layer_b: int
    dataset: str
    task: str
    metric: str
    value_a: float | None
    value_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_bootstrap: float | None
    p_ttest: float | None  # the study's paired t-test over bootstrap replicates
    n_test: int
    n_boot: int
    created_at: dt.datetime = Field(default_factory=utcnow)
    # format 5: DeLong's test of two correlated AUCs (`compare --test delong`: the binary AUC, and `auc:<class>` rows
    # one-vs-rest); ci_low/ci_high of an `auc:<class>` row are DeLong's normal CI
    p_delong: float | None = None


PROBE_COMPARISONS = pa.schema(
    [
        ("run_id", pa.string()),
        ("probe_a", pa.string()),
        ("probe_b", pa.string()),
        ("feature_set_a", pa.string()),
        ("feature_set_b", pa.string()),
        ("layer_a", pa.int32()),
        ("layer_b", pa.int32()),
        ("dataset", pa.string()),
        ("task", pa.string()),
        ("metric", pa.string()),
        ("value_a", pa.float64()),
        ("value_b", pa.float64()),
        ("diff", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_bootstrap", pa.float64()),
        ("p_ttest", pa.float64()),
        ("n_test", pa.int64()),
        ("n_boot", pa.int64()),
        ("created_at", TS),
        ("p_delong", pa.float64()),  # absent from format-3/4 fragments: NULL
    ]
)


class TextEmbeddingRow(Row):
    """A text-tower embedding of one prompt (zero-shot class prompts), with the model's logit scale and bias."""

    model_key: str  # which model's text tower: sha256 of (model id, revision, text preprocessing)
    model_id: str
    text: str
    embedding: list[float]  # unnormalised, as the library's encode_text / get_text_features returns it
    logit_scale: float  # the model's exp(logit_scale)
    logit_bias: float | None = None  # SigLIP: the bias of its sigmoid; None for softmax (CLIP) models
    created_at: dt.datetime = Field(default_factory=utcnow)


TEXT_EMBEDDINGS = pa.schema(
    [
        ("model_key", pa.string()),
        ("model_id", pa.string()),
        ("text", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("logit_scale", pa.float64()),
        ("logit_bias", pa.float64()),
        ("created_at", TS),
    ]
)


# --------------------------------------------------------------------------- VQA benchmark
class VqaItemRow(Row):
    """One question about one or more images (format 3): multiple choice, or open-ended (format 6: ``options`` is
    ``{}`` and ``answer`` is the reference answer's text)."""

    item_set: str  # the name given at `medprobe vqa ingest`
    item_id: str
    image_hashes: list[str]  # sha256 of each image file, in the order the question shows them
    question: str
    context: str | None = None  # a clinical vignette or hint shown before the question
    options: str  # JSON object {"A": "text", "B": ...} in the source's order; {} for an open-ended item
    answer: str  # the gold letter; an open-ended item's reference answer text
    group_id: str | None = None  # patient or image: few-shot exemplars never share it with the question
    category: str | None = None
    split: str  # train | val | test
    source_path: str | None = None
    ingested_at: dt.datetime = Field(default_factory=utcnow)
    retired: bool = False  # format 5: a re-ingest found the item no longer in the source; history kept
    # format 5: every category column the source gives the item, as a JSON object (VQA-RAD: question_type,
    # image_organ); `vqa run --by` breaks accuracy down by them
    categories: str | None = None


VQA_ITEMS = pa.schema(
    [
        ("item_set", pa.string()),
        ("item_id", pa.string()),
        ("image_hashes", pa.list_(pa.string())),
        ("question", pa.string()),
        ("context", pa.string()),
        ("options", pa.string()),
        ("answer", pa.string()),
        ("group_id", pa.string()),
        ("category", pa.string()),
        ("split", pa.string()),
        ("source_path", pa.string()),
        ("ingested_at", TS),
        ("retired", pa.bool_()),  # absent from format-3/4 fragments: read as false
        ("categories", pa.string()),  # absent from format-3/4 fragments: NULL
    ]
)


class VqaPredictionRow(Row):
    """What a model answered to one item under one rotation of its options (format 3)."""

    run_id: str  # deterministic per configuration, so a rerun resumes the same run
    item_set: str
    item_id: str
    rotation: int  # options shifted by this many places (0: as in the source)
    option_order: list[str]  # the source letters in the order shown as A, B, ...
    loglik_sum: list[float] | None = None  # mode loglik, per shown option: sum of token log-probabilities
    loglik_mean: list[float] | None = None  # ... per-token mean
    n_tokens: list[int] | None = None  # ... tokens of the option text
    letter_probs: list[float] | None = None  # mode letter: softmax over the shown option letters
    generation: str | None = None  # mode generate: the decoded new tokens
    predicted: str | None = None  # the chosen source letter (None: unparsed)
    parser_step: str | None = None  # loglik | letter | bare_letter | answer_is | option_text | answer_tag |
    # last_letter | open_text | unparsed
    # right or wrong: the chosen option is the gold one, or an open item's exact match; None (format 6): an open
    # item scored by log-likelihood of its reference (no answer to judge)
    correct: bool | None
    created_at: dt.datetime = Field(default_factory=utcnow)
    # format 6, open-ended items in generate mode: the answer read from the generation and its scores against the
    # reference (medprobe.vqa.open_answers); yes_no_correct only for a yes/no reference
    answer_text: str | None = None
    exact_match: bool | None = None
    token_f1: float | None = None
    token_recall: float | None = None
    yes_no_correct: bool | None = None
    reasoning: str | None = None  # format 6, --reasoning: the text before the answer (the model's reasoning)


VQA_PREDICTIONS = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_set", pa.string()),
        ("item_id", pa.string()),
        ("rotation", pa.int32()),
        ("option_order", pa.list_(pa.string())),
        ("loglik_sum", pa.list_(pa.float64())),
        ("loglik_mean", pa.list_(pa.float64())),
        ("n_tokens", pa.list_(pa.int64())),
        ("letter_probs", pa.list_(pa.float64())),
        ("generation", pa.string()),
        ("predicted", pa.string()),
        ("parser_step", pa.string()),
        ("correct", pa.bool_()),
        ("created_at", TS),
        ("answer_text", pa.string()),  # format 6 columns: absent from older fragments, read as NULL
        ("exact_match", pa.bool_()),
        ("token_f1", pa.float64()),
        ("token_recall", pa.float64()),
        ("yes_no_correct", pa.bool_()),
        ("reasoning", pa.string()),
    ]
)


# --------------------------------------------------------------------------- heat maps
class HeatmapRow(Row):
    """One image's probe map (format 6, `medprobe heatmap`): a summary, not one row per token."""

    run_id: str
    probe_id: str
    image_hash: str | None = None  # None: an image given by path (`--image`), not a member of the store
    source: str  # the image's path or URI
    label: str | None = None  # the image's class for the probe's task, where its dataset has one
    predicted: str  # the class the probe predicts; the PNG shows its map
    probability: float  # of the predicted class
    exact: bool  # the map's mean is the probe's logit (pooling image_mean/spatial_mean); else an approximation
    pooling: str  # the probe's pooling
    layer: int
    token_feature_set_id: str
    grid_rows: int
    grid_cols: int
    pooled_logit: float  # the predicted class's logit of the pooled vector
    map_mean: float  # the mean of the predicted class's token logits (equals pooled_logit when exact)
    border_tokens: int  # the border's width in tokens
    border_area: float  # the border's share of the grid's tokens
    border_shares: str  # JSON {class: share of its positive evidence in the border}
    peak_row: int  # where the predicted class's map is highest
    peak_col: int
    png: str | None = None  # the overlay written
    created_at: dt.datetime = Field(default_factory=utcnow)


HEATMAPS = pa.schema(
    [
        ("run_id", pa.string()),
        ("probe_id", pa.string()),
        ("image_hash", pa.string()),
        ("source", pa.string()),
        ("label", pa.string()),
        ("predicted", pa.string()),
        ("probability", pa.float64()),
        ("exact", pa.bool_()),
        ("pooling", pa.string()),
        ("layer", pa.int32()),
        ("token_feature_set_id", pa.string()),
        ("grid_rows", pa.int32()),
        ("grid_cols", pa.int32()),
        ("pooled_logit", pa.float64()),
        ("map_mean", pa.float64()),
        ("border_tokens", pa.int32()),
        ("border_area", pa.float64()),
        ("border_shares", pa.string()),
        ("peak_row", pa.int32()),
        ("peak_col", pa.int32()),
        ("png", pa.string()),
        ("created_at", TS),
    ]
)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TableSpec:
    """How a table is stored and deduplicated."""

    name: str
    schema: pa.Schema
    model: type[Row]
    key: tuple[str, ...] = ()  # empty: an append-only log, every row is visible
    order: tuple[str, ...] = ()  # which duplicate wins: the first by these columns (ASC/DESC allowed)
    visible: str | None = None  # SQL condition on the winning row: a row that fails it hides its key
    shown: str | None = None  # SQL ``REPLACE`` list: what the view shows instead of a stored column


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        # format 5: the latest row wins (a re-ingest re-points an image whose file moved)
        TableSpec("images", IMAGES, ImageRow, ("image_hash",), ("ingested_at DESC", "uri")),
        TableSpec("datasets", DATASETS, DatasetRow),
        TableSpec("tasks", TASKS, TaskRow, ("dataset", "task"), ("created_at",)),
        TableSpec(
            "dataset_images",
            DATASET_IMAGES,
            DatasetImageRow,
            ("dataset", "image_hash"),
            ("ingested_at DESC", "source_path"),  # format 2: the latest row wins (label corrections, retirements)
            "NOT coalesce(retired, false)",
        ),
        TableSpec("feature_sets", FEATURE_SETS, FeatureSetRow, ("feature_set_id",), ("created_at",)),
        TableSpec(
            "activations",
            ACTIVATIONS,
            ActivationRow,
            ("feature_set_id", "layer", "image_hash"),
            ("segment_id", "row"),
        ),
        TableSpec("failures", FAILURES, FailureRow),
        TableSpec(
            "runs", RUNS, RunRow, ("run_id",), ("updated_at DESC", "status"), shown=f"{ABANDONED_STATUS_SQL} AS status"
        ),
        TableSpec("probe_results", PROBE_RESULTS, ProbeResultRow, ("probe_id",), ("created_at",)),
        TableSpec("predictions", PREDICTIONS, PredictionRow, ("probe_id", "image_hash"), ()),
        TableSpec(
            "probe_comparisons",
            PROBE_COMPARISONS,
            ProbeComparisonRow,
            ("run_id", "probe_a", "probe_b", "metric"),
            ("created_at",),
        ),
        TableSpec("text_embeddings", TEXT_EMBEDDINGS, TextEmbeddingRow, ("model_key", "text"), ("created_at",)),
        TableSpec(
            "vqa_items",
            VQA_ITEMS,
            VqaItemRow,
            ("item_set", "item_id"),
            ("ingested_at DESC",),
            "NOT coalesce(retired, false)",  # format 5: a re-ingest retires items that left the source
        ),
        TableSpec(
            "vqa_predictions", VQA_PREDICTIONS, VqaPredictionRow, ("run_id", "item_id", "rotation"), ("created_at",)
        ),
        TableSpec("heatmaps", HEATMAPS, HeatmapRow),  # format 6
    )
}


def rows_to_table(name: str, rows: list[Row]) -> pa.Table:
    """Validate ``rows`` against the table's model and build an Arrow table of its schema."""
    spec = TABLES[name]
    bad = [r for r in rows if not isinstance(r, spec.model)]
    if bad:
        raise TypeError(f"table {name!r} takes {spec.model.__name__} rows, got {type(bad[0]).__name__}")
    columns = {f.name: [getattr(r, f.name) for r in rows] for f in spec.schema}
    return pa.table(columns, schema=spec.schema)
