"""Fragments written before a format added a column read with the row model's default, also beside newer ones."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from medprobe.featurestore import FeatureStore
from medprobe.schemas import TABLES
from medprobe.schemas.tables import ProbeResultRow


def _row(probe_id: str, method: str = "probe", k: int | None = None, c: float | None = 0.1) -> ProbeResultRow:
    return ProbeResultRow(run_id="r", probe_id=probe_id, feature_set_id="fs", layer=0, dataset="d", task="t",
                          solver="torch", c=c, c_grid=[0.1], selection="cv", cv_scores="{}", n_train=10, n_test=5,
                          class_names=["a", "b"], metrics="{}", fit_seconds=0.1, method=method, k=k)  # fmt: skip


def test_a_format_2_probe_result_reads_as_method_probe_beside_format_3_rows(tmp_path) -> None:
    store = FeatureStore.open(str(tmp_path / "s"), create=True)
    store.append("probe_results", [_row("p-new", method="knn", k=20, c=None)])
    fields = [f for f in TABLES["probe_results"].schema if f.name not in ("method", "k")]
    old = pa.table({f.name: [getattr(_row("p-old"), f.name)] for f in fields}, schema=pa.schema(fields))
    folder = tmp_path / "s" / "tables" / "probe_results"
    pq.write_table(old, folder / "20260101T000000000000-000000000000.parquet")  # written by format 2
    store = FeatureStore.open(str(tmp_path / "s"), create=False)
    rows = store.sql("SELECT probe_id, method, k, c FROM probe_results ORDER BY probe_id").to_pylist()
    assert rows == [{"probe_id": "p-new", "method": "knn", "k": 20, "c": None},
                    {"probe_id": "p-old", "method": "probe", "k": None, "c": 0.1}]  # fmt: skip
    assert store.sql("SELECT count(*) FROM probe_results WHERE method = 'probe'").column(0)[0].as_py() == 1


def test_many_fragments_of_one_table(tmp_path) -> None:
    store = FeatureStore.open(str(tmp_path / "s"), create=True)
    for i in range(60):
        store.append("probe_results", [_row(f"p{i:03d}")])
    assert store.sql("SELECT count(DISTINCT probe_id) FROM probe_results").column(0)[0].as_py() == 60
