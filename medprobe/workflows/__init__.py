"""The workflow layer: one function per command, named as the command, taking its long options as keyword
arguments, recording its run and returning a typed result. The CLI is a thin layer over these functions; a notebook
calls them directly (``import medprobe; medprobe.sweep(task="kl_grade", model="efficientnet-lite0")``)."""

from medprobe.workflows.common import StoreWarning, open_store
from medprobe.workflows.extraction import (
    ExtractionStopped,
    ExtractResult,
    ImagesMissingError,
    StatusResult,
    SubmitResult,
    WorkerResult,
    extract,
    status,
    submit,
    worker,
)
from medprobe.workflows.heatmap import HeatmapResult, heatmap
from medprobe.workflows.ingesting import DatasetsResult, IngestFailuresError, IngestResult, datasets, ingest
from medprobe.workflows.modelinfo import ModelsResult, demo_data, models
from medprobe.workflows.prediction import PredictResult, predict
from medprobe.workflows.probes import CompareResult, ProbeRunResult, compare, load_probe, sweep, train
from medprobe.workflows.reporting import ReportResult, report
from medprobe.workflows.results import Result
from medprobe.workflows.similarity import SearchResult, search
from medprobe.workflows.storage import ExportResult, SqlResult, export, sql
from medprobe.workflows.zero_shot import ZeroshotResult, zeroshot

__all__ = [
    "CompareResult",
    "DatasetsResult",
    "ExportResult",
    "ExtractResult",
    "ExtractionStopped",
    "HeatmapResult",
    "ImagesMissingError",
    "IngestFailuresError",
    "IngestResult",
    "ModelsResult",
    "PredictResult",
    "ProbeRunResult",
    "ReportResult",
    "Result",
    "SearchResult",
    "SqlResult",
    "StatusResult",
    "StoreWarning",
    "SubmitResult",
    "WorkerResult",
    "ZeroshotResult",
    "compare",
    "datasets",
    "demo_data",
    "export",
    "extract",
    "heatmap",
    "ingest",
    "load_probe",
    "models",
    "open_store",
    "predict",
    "report",
    "search",
    "sql",
    "status",
    "submit",
    "sweep",
    "train",
    "worker",
    "zeroshot",
]
