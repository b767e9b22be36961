"""``--format csv|json|parquet`` on every table, strict JSON, repeated names; layer -1 in train and export."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medprobe.cli.output import dumps, flatten_for_csv, jsonable, unique_names
from medprobe.featurestore import FeatureStore
from medprobe.schemas import TABLES, FailureRow, ImageRow
from medprobe.schemas.tables import HeatmapRow, TextEmbeddingRow, VqaItemRow, VqaPredictionRow
from tests.helpers.cli import run_cli
from tests.helpers.features import fill_store, image_hash

FAST = ["--c-grid", "0.1,1", "--n-boot", "50", "--cv", "3"]


@pytest.fixture
def full_store(synth_store: FeatureStore, capsys: pytest.CaptureFixture[str]) -> FeatureStore:
    """A store with rows in every table: features, tasks, a sweep, a comparison, images and failures."""
    fill_store(synth_store, fs_id="fs-noise", model_id="synthetic/noise", seed=7)
    url = synth_store.url
    code, _, err = run_cli(capsys, "compare", "-t", "grade", "--feature-set", "fs-synth,fs-noise", "-l", "-1,-1",
                           "-f", "json", "-s", url, *FAST)  # fmt: skip
    assert code == 0, err
    synth_store.append(
        "images",
        [
            ImageRow(
                image_hash=image_hash(1), uri="/x/1.png", width=4, height=3, mode="L", bit_depth=8, format="PNG",
                n_bytes=10,
            )
        ],
    )  # fmt: skip
    synth_store.append("failures", [FailureRow(failure_id="f1", stage="ingest", reason="empty", error="0 bytes")])
    synth_store.append(
        "text_embeddings",
        [TextEmbeddingRow(model_key="m", model_id="x", text="a photo", embedding=[0.5, -1.0], logit_scale=100.0)],
    )
    synth_store.append("vqa_items", [VqaItemRow(item_set="s", item_id="1", image_hashes=[image_hash(1)], question="q?",
                                                options='{"A": "yes", "B": "no"}', answer="A", split="test")])
    synth_store.append("vqa_predictions", [VqaPredictionRow(run_id="vqa-1", item_set="s", item_id="1", rotation=0,
                                                            option_order=["A", "B"], letter_probs=[0.7, 0.3],
                                                            predicted="A", parser_step="letter", correct=True)])
    heatmap = HeatmapRow(run_id="hm-1", probe_id="p1", image_hash=image_hash(1), source="/x/1.png", predicted="a",
                         probability=0.9, exact=True, pooling="image_mean", layer=0, token_feature_set_id="fs-t",
                         grid_rows=2, grid_cols=2, pooled_logit=1.0, map_mean=1.0, border_tokens=1, border_area=1.0,
                         border_shares='{"a": 1.0}', peak_row=0, peak_col=1)  # fmt: skip
    synth_store.append("heatmaps", [heatmap])
    synth_store.refresh()
    return synth_store


def test_sql_formats_work_on_every_table(full_store: FeatureStore, capsys, tmp_path) -> None:
    for table in TABLES:
        n = full_store.sql(f'SELECT count(*) FROM "{table}"').column(0)[0].as_py()
        assert n > 0, f"{table} is empty: the test must exercise every table"
        query = f'SELECT * FROM "{table}"'
        code, out, err = run_cli(capsys, "sql", query, "-f", "csv", "-s", full_store.url)
        assert code == 0, f"{table}: {err}"
        rows = list(csv.DictReader(io.StringIO(out)))
        assert len(rows) == n, table
        code, out, err = run_cli(capsys, "sql", query, "-f", "json", "-s", full_store.url)
        assert code == 0, f"{table}: {err}"
        assert len(json.loads(out)) == n, table  # strict JSON: json.loads refuses NaN only if we wrote it bare
        assert "NaN" not in out and "Infinity" not in out
        path = tmp_path / f"{table}.parquet"
        code, _, err = run_cli(capsys, "sql", query, "-o", str(path), "-s", full_store.url)  # format from suffix
        assert code == 0, f"{table}: {err}"
        assert pq.read_table(path).num_rows == n
    # list columns come out as JSON text in CSV
    code, out, _ = run_cli(capsys, "sql", "SELECT task, class_names FROM tasks ORDER BY task", "-f", "csv",
                           "-s", full_store.url)  # fmt: skip
    first = next(csv.DictReader(io.StringIO(out)))
    assert isinstance(json.loads(first["class_names"]), list)


def test_json_is_strict_and_repeated_names_survive(synth_store: FeatureStore, capsys, tmp_path) -> None:
    q = "SELECT 1 AS a, 2 AS a, 'nan'::DOUBLE AS x, 'inf'::DOUBLE AS y, [1.5, 'nan'::DOUBLE] AS l"
    code, out, err = run_cli(capsys, "sql", q, "-f", "json", "-s", synth_store.url)
    assert code == 0, err
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc == [{"a": 1, "a_2": 2, "x": None, "y": None, "l": [1.5, None]}]
    assert "a_2" in err
    code, out, _ = run_cli(capsys, "sql", q, "-f", "csv", "-s", synth_store.url)
    assert out.splitlines()[0] == "a,a,x,y,l"
    code, out, _ = run_cli(capsys, "sql", "SELECT 'first' AS a, 'second' AS a", "-s", synth_store.url)
    assert code == 0 and "first" in out and "second" in out  # the table shows both columns


def test_parquet_needs_out_and_out_needs_a_known_suffix(synth_store: FeatureStore, capsys, tmp_path) -> None:
    code, _, err = run_cli(capsys, "sql", "SELECT 1", "-f", "parquet", "-s", synth_store.url)
    assert code != 0 and "--out" in err
    code, _, err = run_cli(capsys, "sql", "SELECT 1", "-o", str(tmp_path / "x.txt"), "-s", synth_store.url)
    assert code != 0 and "--format" in err


def test_train_and_export_take_negative_layers(synth_store: FeatureStore, capsys, tmp_path) -> None:
    url = synth_store.url
    code, out, err = run_cli(capsys, "train", "-t", "grade", "--feature-set", "fs-synth", "--layer", "-1",
                             "-f", "json", "-s", url, *FAST)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["layer"] == 3
    code, out, err = run_cli(capsys, "sweep", "-t", "grade", "--feature-set", "fs-synth", "-l", "-2:", "-f", "csv",
                             "-s", url, *FAST)  # fmt: skip
    assert code == 0, err
    assert sorted({int(r["layer"]) for r in csv.DictReader(io.StringIO(out))}) == [2, 3]
    path = tmp_path / "x.npz"
    code, out, err = run_cli(capsys, "export", "--feature-set", "fs-synth", "--layer", "-1", "-o", str(path), "-s", url)
    assert code == 0, err
    with np.load(path) as z:
        np.testing.assert_array_equal(z["X"], synth_store.read("fs-synth", 3, list(z["image_hash"])))
    code, _, err = run_cli(capsys, "export", "--feature-set", "fs-synth", "-l", "-5", "-o", str(path), "-s", url)
    assert code != 0 and "-5" in err and "-4..-1" in err
    code, _, err = run_cli(capsys, "train", "-t", "grade", "--feature-set", "fs-synth", "-l", "0,1", "-s", url)
    assert code != 0 and "exactly one" in err


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=8),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
        max_leaves=20,
    )
)
def test_jsonable_always_gives_strict_json(value: object) -> None:
    text = dumps(value)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    if isinstance(value, float):
        assert jsonable(value) == (value if math.isfinite(value) else None)


@given(st.lists(st.sampled_from(["a", "b", "a_2", "c", "a_3"]), max_size=8))
def test_unique_names_keep_order_and_never_collide(names: list[str]) -> None:
    out = unique_names(names)
    assert len(out) == len(names) == len(set(out))
    assert all(o == n or o.startswith(f"{n}_") for o, n in zip(out, names, strict=True))
    firsts = {n: i for i, n in reversed(list(enumerate(names)))}
    assert all(out[i] == n for n, i in firsts.items())


def test_flatten_for_csv_turns_nested_cells_into_json() -> None:
    t = pa.table({"l": [[1, 2], None], "s": [{"x": 1}, {"x": None}], "b": [b"\x01", None], "n": [1, 2]})
    flat = flatten_for_csv(t)
    assert flat.column("l").to_pylist() == ["[1, 2]", None]
    assert flat.column("s").to_pylist() == ['{"x": 1}', '{"x": null}']
    assert flat.column("b").to_pylist() == ["01", None]
    assert flat.column("n").to_pylist() == [1, 2]


def test_csv_quotes_only_what_needs_it(synth_store: FeatureStore, capsys) -> None:
    q = "SELECT 'sweep-1' AS run_id, 'a,b' AS pair, 'say \"hi\"' AS quoted, NULL AS missing, 1.5 AS x"
    code, out, _ = run_cli(capsys, "sql", q, "-f", "csv", "-s", synth_store.url)
    assert code == 0
    assert out.splitlines() == ["run_id,pair,quoted,missing,x", 'sweep-1,"a,b","say ""hi""",,1.5']
    assert next(csv.DictReader(io.StringIO(out)))["pair"] == "a,b"
