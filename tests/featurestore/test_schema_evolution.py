"""Fragments written before a format added a column read with the row model's default, also beside newer ones."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.schemas import FORMAT_VERSION, TABLES
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


def test_format_3_vqa_item_rows_are_migrated_to_their_row_kind(tmp_path) -> None:
    import json

    from medprobe.extractor.plan import check_dataset
    from medprobe.schemas.tables import DatasetImageRow, DatasetRow

    url = str(tmp_path / "s")
    store = FeatureStore.open(url, create=True)
    store.append("datasets", [DatasetRow(dataset="vqa-x", format="vqa", source="vqa_items:x", split_policy="shipped"),
                              DatasetRow(dataset="imgs", format="csv", source="m.csv", split_policy="shipped")])
    fields = [f for f in TABLES["dataset_images"].schema if f.name != "row_kind"]
    folder = tmp_path / "s" / "tables" / "dataset_images"
    folder.mkdir(parents=True, exist_ok=True)
    for dataset, key in (("vqa-x", "a" * 64), ("imgs", "b" * 64)):  # written by format 3: no row_kind column
        row = DatasetImageRow(dataset=dataset, image_hash=key, split="train", source_path="p", labels="{}")
        old = pa.table({f.name: [getattr(row, f.name)] for f in fields}, schema=pa.schema(fields))
        pq.write_table(old, folder / f"20260101T00000000000{len(dataset)}-000000000000.parquet")
    marker = tmp_path / "s" / "medprobe.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "format_version": 3}))
    store = FeatureStore.open(url, create=False)
    kinds = "SELECT dataset, row_kind FROM dataset_images ORDER BY dataset"
    assert store.sql(kinds).to_pylist() == [{"dataset": "imgs", "row_kind": "image"},
                                            {"dataset": "vqa-x", "row_kind": "image"}]  # read as the default
    store.append("failures", [])  # nothing written: no migration
    store.append("datasets", [DatasetRow(dataset="other", format="csv", source="n.csv", split_policy="shipped")])
    store = FeatureStore.open(url, create=False)  # a fresh reader sees the migration
    assert store.sql(kinds).to_pylist() == [{"dataset": "imgs", "row_kind": "image"},
                                            {"dataset": "vqa-x", "row_kind": "vqa_item"}]  # fmt: skip
    assert json.loads(marker.read_text())["format_version"] == FORMAT_VERSION
    check_dataset(store, "imgs")
    with pytest.raises(InvalidInputError, match="holds VQA items, not images"):
        check_dataset(store, "vqa-x")


def test_a_foreign_or_wrongly_typed_fragment_is_named_and_left_out(tmp_path, capsys) -> None:
    from tests.helpers.cli import run_cli

    url = str(tmp_path / "s")
    store = FeatureStore.open(url, create=True)
    store.append("probe_results", [_row("p1")])
    folder = tmp_path / "s" / "tables" / "probe_results"
    pq.write_table(pa.table({"x": pa.array([1, 2], pa.int16())}), folder / "20260101T000000000001-aaaaaaaaaaaa.parquet")
    typed = pa.table({f.name: [getattr(_row("p2"), f.name)] for f in TABLES["probe_results"].schema})
    typed = typed.set_column(typed.schema.get_field_index("layer"), "layer", pa.array(["zero"]))  # string, not int
    pq.write_table(typed, folder / "20260101T000000000002-bbbbbbbbbbbb.parquet")
    store = FeatureStore.open(url, create=False)
    assert store.sql("SELECT probe_id FROM probe_results").column(0).to_pylist() == ["p1"]
    assert len(store.unreadable_fragments) == 2
    assert any("has a column 'x'" in why for why in store.unreadable_fragments.values())
    assert any("column 'layer' is string" in why for why in store.unreadable_fragments.values())
    code, _, err = run_cli(capsys, "store", "verify", "--store", url)
    assert code == 4 and "aaaaaaaaaaaa" in err + _ and "Traceback" not in err
    code, _, err = run_cli(capsys, "store", "quarantine", "--store", url)
    assert code == 0, err
    assert FeatureStore.open(url).unreadable_fragments == {}


def test_a_format_5_store_reads_its_vqa_predictions_and_feature_sets_and_is_marked_6_by_a_write(tmp_path) -> None:
    """Format 6 added vqa_predictions' open-answer columns and feature_sets.token_grid: format-5 fragments read them
    as NULL (a prediction with a verdict, a pooled feature set), and the first write migrates the marker."""
    import json

    from medprobe.schemas.tables import FeatureSetRow, VqaPredictionRow

    url = str(tmp_path / "s")
    FeatureStore.open(url, create=True)
    new_columns = {"vqa_predictions": {"answer_text", "exact_match", "token_f1", "token_recall", "yes_no_correct",
                                       "reasoning"}, "feature_sets": {"token_grid"}}  # fmt: skip
    old_rows = {
        "vqa_predictions": VqaPredictionRow(run_id="vqa-1", item_set="s", item_id="1", rotation=0,
                                            option_order=["A", "B"], predicted="A", parser_step="letter",
                                            correct=True),
        "feature_sets": FeatureSetRow(feature_set_id="fs-old", model_id="m", model_revision="r", adapter="a",
                                      preprocessing="{}", prompt=None, pooling="cls", layer_semantics="s",
                                      n_layers=1, hidden_sizes=[4], compute_dtype="fp32", storage_dtype="float16"),
    }  # fmt: skip
    for table, row in old_rows.items():  # written by format 5: without the new columns
        fields = [f for f in TABLES[table].schema if f.name not in new_columns[table]]
        folder = tmp_path / "s" / "tables" / table
        folder.mkdir(parents=True, exist_ok=True)
        old = pa.table({f.name: [getattr(row, f.name)] for f in fields}, schema=pa.schema(fields))
        pq.write_table(old, folder / "20260101T000000000000-000000000000.parquet")
    marker = tmp_path / "s" / "medprobe.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "format_version": 5}))
    store = FeatureStore.open(url, create=False)
    pred = store.sql("SELECT * FROM vqa_predictions").to_pylist()[0]
    assert pred["correct"] is True and all(pred[c] is None for c in new_columns["vqa_predictions"])
    assert store.sql("SELECT token_grid FROM feature_sets").column(0)[0].as_py() is None
    assert store.info["format_version"] == 5
    store.append("vqa_predictions", [VqaPredictionRow(run_id="vqa-2", item_set="s", item_id="2", rotation=0,
                                                      option_order=[], parser_step="open_text", correct=False,
                                                      generation="lung", answer_text="lung", exact_match=False,
                                                      token_f1=0.0, token_recall=0.0)])  # fmt: skip
    assert json.loads(marker.read_text())["format_version"] == FORMAT_VERSION == 6
    assert store.sql("SELECT count(*) FROM vqa_predictions").column(0)[0].as_py() == 2
