"""SQL over the store: read-only enforcement, DuckDB's errors, joins, and the ``medprobe sql`` outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from medprobe.errors import InvalidInputError, ReadOnlySQLError
from medprobe.featurestore import FeatureStore
from medprobe.schemas import DatasetImageRow
from tests.helpers.cli import run_cli
from tests.helpers.features import activations, image_hash, open_with_feature_set

HASHES = [image_hash(i) for i in range(12)]
SPLITS = ["train"] * 6 + ["val"] * 3 + ["test"] * 3

REFUSED = {
    "INSERT INTO images SELECT * FROM images": "INSERT",
    "CREATE TABLE t AS SELECT 1": "CREATE",
    "CREATE OR REPLACE VIEW activations AS SELECT 1": "CREATE",
    "COPY (SELECT 1) TO '{out}'": "COPY",
    "ATTACH '{out}' AS other": "ATTACH",
    "DROP VIEW activations": "DROP",
    "SET threads = 1": "SET",
    "INSTALL httpfs": "LOAD",
    "LOAD httpfs": "LOAD",
    "PRAGMA version": "PRAGMA",
    "SELECT 1; DROP VIEW images": "DROP",
    "select 1 ;\n copy (select 2) to '{out}'": "COPY",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'": "COPY",
    "CALL pragma_version()": "CALL",
    "EXPORT DATABASE '{out}'": "EXPORT",
}


@pytest.fixture
def sql_store(store_url):
    s = open_with_feature_set(store_url)
    s.commit_segment("fs-test", HASHES[:8], {0: activations(HASHES[:8], 0, 16), 2: activations(HASHES[:8], 2, 16)})
    s.commit_segment("fs-test", HASHES[6:], {0: activations(HASHES[6:], 0, 16, salt=1)})
    rows = [
        DatasetImageRow(dataset="knee", image_hash=h, split=sp, source_path=f"img{i:02d}.png", labels='{"kl": 1}')
        for i, (h, sp) in enumerate(zip(HASHES, SPLITS, strict=True))
    ]
    s.append("dataset_images", rows)
    yield s
    s.close()


@pytest.mark.parametrize("query", list(REFUSED))
def test_writes_are_refused_with_a_clear_message(sql_store, query, tmp_path):
    out = tmp_path / "written"
    with pytest.raises(ReadOnlySQLError, match=rf"read-only: a {REFUSED[query]} statement is refused"):
        sql_store.sql(query.format(out=out))
    assert not out.exists()
    assert sql_store.sql("SELECT count(*) FROM activations")[0][0].as_py() == 8 * 2 + 4  # views intact


def test_read_statements_are_allowed(sql_store):
    assert sql_store.sql("WITH a AS (SELECT 1 AS x) SELECT x FROM a")[0][0].as_py() == 1
    assert sql_store.sql("EXPLAIN SELECT * FROM activations").num_rows >= 1
    assert sql_store.sql("DESCRIBE activations").num_rows == 5
    assert sql_store.sql("SELECT count(*) FROM feature_sets WHERE feature_set_id = ?", ["fs-test"])[0][0].as_py() == 1


def test_syntax_error_gives_duckdb_message(sql_store):
    with pytest.raises(InvalidInputError, match='Parser Error: syntax error at or near "SELEC"'):
        sql_store.sql("SELEC 1")
    with pytest.raises(InvalidInputError, match=r"Catalog Error.*no_such_table"):
        sql_store.sql("SELECT * FROM no_such_table")


def test_join_activations_with_dataset_images(sql_store):
    t = sql_store.sql(
        """
        SELECT d.split, count(*) AS n FROM activations a JOIN dataset_images d USING (image_hash)
        WHERE a.feature_set_id = 'fs-test' AND a.layer = 0 GROUP BY d.split ORDER BY d.split
        """
    )
    assert t.to_pydict() == {"split": ["test", "train", "val"], "n": [3, 6, 3]}
    sel = "SELECT image_hash FROM dataset_images WHERE dataset = 'knee' AND split = 'val' ORDER BY source_path"
    x = sql_store.read("fs-test", 0, sql=sel)
    # images 6, 7 come from the first segment (it wins the duplicate), 8 from the second
    want = np.concatenate([activations(HASHES[6:8], 0, 16), activations(HASHES[8:9], 0, 16, salt=1)])
    np.testing.assert_array_equal(x, want.astype(np.float16))
    with pytest.raises(InvalidInputError, match="image_hash column"):
        sql_store.read("fs-test", 0, sql="SELECT 1 AS x")


def test_cli_sql_formats(sql_store, tmp_path, capsys):
    q = "SELECT image_hash, split FROM dataset_images ORDER BY source_path"
    code, out, _ = run_cli(capsys, "sql", q, "--store", sql_store.url, "--format", "csv")
    assert code == 0 and out.splitlines()[0] == "image_hash,split" and len(out.splitlines()) == 13
    for fmt in ("csv", "json", "parquet"):
        path = tmp_path / f"out.{fmt}"
        code, _, err = run_cli(capsys, "sql", q, "--store", sql_store.url, "--format", fmt, "--out", str(path))
        assert code == 0, err
        if fmt == "csv":
            got = pacsv.read_csv(path).column("split").to_pylist()
        elif fmt == "json":
            got = [r["split"] for r in json.loads(Path(path).read_text())]
        else:
            got = pq.read_table(path).column("split").to_pylist()
        assert got == SPLITS
    code, out, _ = run_cli(
        capsys, "sql", "SELECT split, count(*) AS n FROM dataset_images GROUP BY 1", "-s", sql_store.url
    )
    assert code == 0 and "train" in out


def test_cli_sql_errors_exit_non_zero(sql_store, capsys):
    code, _, err = run_cli(capsys, "sql", "SELEC 1", "--store", sql_store.url)
    assert code != 0 and "Parser Error" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "sql", "DROP VIEW images", "--store", sql_store.url)
    assert code != 0 and "read-only" in err


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_parquet('{outside}')",
        "SELECT * FROM read_blob('{outside}')",
    ],
)
def test_sql_reads_nothing_outside_the_store(sql_store, query, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    outside = tmp_path / "secret.parquet"
    pq.write_table(pa.table({"secret": [1]}), outside)
    with pytest.raises(InvalidInputError, match=r"reads only the store"):
        sql_store.sql(query.format(outside=outside))
    assert sql_store.sql("SELECT count(*) FROM activations")[0][0].as_py() > 0  # the store itself still reads


def test_sql_cannot_read_duckdbs_default_temp_directory(tmp_path, monkeypatch) -> None:
    """DuckDB may always read its temp directory; medprobe gives it a private, empty one (not ./.tmp)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "secret.csv").write_text("a,b\n1,2\n")
    store = FeatureStore.open(str(tmp_path / "s"), create=True)
    with pytest.raises(InvalidInputError, match="reads only the store"):
        store.sql("SELECT * FROM read_csv('.tmp/secret.csv')")


@pytest.mark.parametrize("target", ["tables/dataset_images/x.parquet", "medprobe.json", "."])
def test_sql_out_never_writes_into_the_store(tmp_path, capsys, target: str) -> None:
    from tests.helpers.cli import run_cli

    url = str(tmp_path / "s")
    FeatureStore.open(url, create=True)
    before = (tmp_path / "s" / "medprobe.json").read_text()
    out = str(tmp_path / "s" / target) if target != "." else str(tmp_path / "s" / "x.csv")
    code, _, err = run_cli(capsys, "-s", url, "sql", "SELECT 1 AS n", "-o", out, "-f", "parquet")
    assert code == 3 and "lies inside the store" in err, err
    assert (tmp_path / "s" / "medprobe.json").read_text() == before
    assert not (tmp_path / "s" / "tables" / "dataset_images" / "x.parquet").exists()
    assert FeatureStore.open(url).sql("SELECT count(*) FROM dataset_images").column(0)[0].as_py() == 0
