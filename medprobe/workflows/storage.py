"""Workflows over the store itself: ``sql`` (read-only queries) and ``export`` (one layer as NumPy arrays)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from medprobe.layerspec import resolve_layer
from medprobe.workflows.common import StoreArg, open_store
from medprobe.workflows.results import Result


@dataclass
class SqlResult(Result):
    """A query's rows (``table``, an Arrow table; ``to_pandas()`` for a DataFrame)."""

    query: str
    n_rows: int
    table: pa.Table = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """``{"query", "n_rows", "rows": [...]}``."""
        from medprobe.workflows.results import jsonable

        return {"query": self.query, "n_rows": self.n_rows, "rows": jsonable(self.table.to_pylist())}

    def to_arrow(self) -> pa.Table:
        """The rows as they came from DuckDB."""
        return self.table

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts."""
        return self.table.to_pylist()

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        return self.table.to_pandas()


def sql(*, query: str, max_rows: int = 200, store: StoreArg = None) -> SqlResult:
    """Run a read-only SQL query (DuckDB dialect) over the store's tables (images, dataset_images, feature_sets,
    activations, probe_results, predictions, runs, ...); ``max_rows`` is the rows the CLI's table shows."""
    table = open_store(store).sql(query)
    return SqlResult(query=query, n_rows=table.num_rows, table=table)


@dataclass
class ExportResult(Result):
    """One layer written as ``X`` (rows x hidden) and ``image_hash`` arrays to an .npz file."""

    out: str
    feature_set_id: str
    layer: int
    rows_written: int
    hidden: int
    missing: int


def export(*, feature_set: str, out: str, layers: str | int = "-1", dataset: str | None = None,
           split: str | None = None, store: StoreArg = None) -> ExportResult:  # fmt: skip
    """Write one stored layer of ``feature_set`` (``layers``: default -1, the last stored) as X and image_hash to the
    .npz file ``out``; ``dataset`` (and ``split``) restrict the rows; the result's ``missing`` counts selected images
    without activations; ``store``: a store URL or an open ``FeatureStore``."""
    from medprobe.featurestore import export_npz

    st = open_store(store)
    st.feature_set(feature_set)
    layer = resolve_layer(str(layers), st.layers(feature_set), what=f"feature set {feature_set}")
    res = export_npz(st, feature_set, layer, out, dataset=dataset, split=split)
    return ExportResult(out=out, feature_set_id=feature_set, layer=layer, rows_written=res.rows, hidden=res.hidden,
                        missing=res.missing)  # fmt: skip
