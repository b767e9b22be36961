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

__all__ = [
    "FORMAT_VERSION",
    "TABLES",
    "ActivationRow",
    "DatasetImageRow",
    "DatasetRow",
    "FailureRow",
    "FeatureSetRow",
    "ImageRow",
    "PredictionRow",
    "ProbeResultRow",
    "Row",
    "RunRow",
    "TableSpec",
    "TaskRow",
    "rows_to_table",
    "utcnow",
]
