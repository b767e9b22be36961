"""The typed results the workflow functions return: numbers as attributes, ``to_dict()`` (the JSON document the CLI
prints with ``-f json``) and ``to_arrow()`` (the rows ``-f csv|parquet`` write), so a notebook and the CLI see the
same numbers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa


def jsonable(value: Any) -> Any:
    """``value`` made strict-JSON-safe: non-finite floats -> None, bytes -> hex, times -> ISO, numpy -> Python."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return jsonable(float(value)) if value.is_finite() else None
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump())
    return str(value)


def as_table(rows: pa.Table | Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (an Arrow table, or a list of dicts) as an Arrow table; nested dict values are kept as structs."""
    if isinstance(rows, pa.Table):
        return rows
    if not rows:
        return pa.table({})
    return pa.Table.from_pylist([jsonable(dict(r)) for r in rows])


def _public_fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.repr}


@dataclasses.dataclass
class Result:
    """Base of every workflow result. Subclasses are dataclasses; fields declared with ``repr=False`` hold working
    objects (fitted probes, arrays) that are not part of the document."""

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-safe document (what ``-f json`` prints)."""
        return jsonable(_public_fields(self))

    def rows(self) -> list[dict[str, Any]]:
        """The result as flat rows (what ``-f csv|parquet`` write); default: one row of the scalar fields."""
        doc = self.to_dict()
        return [{k: v for k, v in doc.items() if not isinstance(v, dict | list)}]

    def to_arrow(self) -> pa.Table:
        """The rows as an Arrow table."""
        return as_table(self.rows())


def metric_columns(metrics: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``key``, ``key_ci_low``, ``key_ci_high`` columns of metric entries ``{"value", "ci_low", "ci_high"}``."""
    out: dict[str, Any] = {}
    for key in keys:
        entry = metrics.get(key) or {}
        out[key] = entry.get("value")
        out[f"{key}_ci_low"] = entry.get("ci_low")
        out[f"{key}_ci_high"] = entry.get("ci_high")
    return out


METRIC_KEYS = ("macro_auc", "balanced_accuracy", "macro_f1", "accuracy")
