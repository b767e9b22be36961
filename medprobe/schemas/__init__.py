"""Every persisted table's Arrow schema and pydantic row model, and the store format version."""

from medprobe.schemas.tables import (
    TABLES,
    ActivationRow,
    DatasetImageRow,
    DatasetRow,
    FailureRow,
    FeatureSetRow,
    ImageRow,
    PredictionRow,
    ProbeResultRow,
    Row,
    RunRow,
    TableSpec,
    TaskRow,
    rows_to_table,
    utcnow,
)
from medprobe.schemas.version import FORMAT_VERSION
from medprobe.schemas.vocab import COMPUTE_DTYPES, SPLITS, STORAGE_DTYPES, ComputeDType, Split, StorageDType

__all__ = [
    "COMPUTE_DTYPES",
    "FORMAT_VERSION",
    "SPLITS",
    "STORAGE_DTYPES",
    "TABLES",
    "ActivationRow",
    "ComputeDType",
    "DatasetImageRow",
    "DatasetRow",
    "FailureRow",
    "FeatureSetRow",
    "ImageRow",
    "PredictionRow",
    "ProbeResultRow",
    "Row",
    "RunRow",
    "Split",
    "StorageDType",
    "TableSpec",
    "TaskRow",
    "rows_to_table",
    "utcnow",
]
