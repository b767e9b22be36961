"""Per-image metadata: `--metadata-column` keeps typed values (numbers stay numbers, empty is NULL) per (dataset,
image), queryable with SQL; a re-ingest updates them; the knee layout keeps `side`; an older store reads on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medprobe
from medprobe.errors import InvalidInputError
from medprobe.ingestion.records import metadata_value
from tests.helpers.paths import require

CASES = [("63", 63), ("63.0", 63), ("63.5", 63.5), ("", None), (" NaN ", None), ("F", "F"), (" left arm ", "left arm"),
         ("1e3", 1000), ("inf", "inf"), (None, None), (7, 7), (0.25, 0.25)]  # fmt: skip


@pytest.mark.parametrize(("raw", "value"), CASES)
def test_the_metadata_rule(raw, value) -> None:
    got = metadata_value(raw)
    assert got == value and type(got) is type(value)


def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(folder / f"{i}.png")
        names.append(f"{i}.png")
    return names


def test_metadata_columns_round_trip_through_ingest_and_sql(tmp_path: Path) -> None:
    names = _images(tmp_path, 4)
    rows = [("63", "F", "site A"), ("41.5", "M", ""), ("", "F", "site B"), ("70", "", "site A")]
    (tmp_path / "m.csv").write_text("path,label,age,sex,site\n" + "".join(
        f"{n},{'ab'[i % 2]},{a},{s},{t}\n" for i, (n, (a, s, t)) in enumerate(zip(names, rows, strict=True))))
    store = str(tmp_path / "s")
    medprobe.ingest(source=str(tmp_path / "m.csv"), layout="csv", dataset="d", label_column="label",
                    metadata_column="age,sex,site", no_progress=True, store=store)  # fmt: skip
    st = medprobe.open_store(store)
    got = st.sql("SELECT source_path, json_type(metadata->'age') AS t, (metadata->>'age')::DOUBLE AS age, "
                 "metadata->>'sex' AS sex, metadata->>'site' AS site FROM dataset_images ORDER BY source_path"
                 ).to_pylist()  # fmt: skip
    assert got == [
        {"source_path": "0.png", "t": "UBIGINT", "age": 63.0, "sex": "F", "site": "site A"},
        {"source_path": "1.png", "t": "DOUBLE", "age": 41.5, "sex": "M", "site": None},
        {"source_path": "2.png", "t": "NULL", "age": None, "sex": "F", "site": "site B"},
        {"source_path": "3.png", "t": "UBIGINT", "age": 70.0, "sex": None, "site": "site A"},
    ]
    # a corrected value wins on re-ingest, counted; the old row stays in raw_dataset_images
    (tmp_path / "m.csv").write_text((tmp_path / "m.csv").read_text().replace("0.png,a,63,F", "0.png,a,64,F"))
    again = medprobe.ingest(source=str(tmp_path / "m.csv"), layout="csv", dataset="d", label_column="label",
                            metadata_column="age,sex,site", no_progress=True, store=store)  # fmt: skip
    assert again.summary.metadata_changed == 1 and again.memberships_new == 0
    st.refresh()
    age = st.sql("SELECT metadata->>'age' FROM dataset_images WHERE source_path = '0.png'").column(0)[0].as_py()
    assert age == "64"
    with pytest.raises(InvalidInputError, match="no column"):
        medprobe.ingest(source=str(tmp_path / "m.csv"), layout="csv", dataset="d", label_column="label",
                        metadata_column="weight", no_progress=True, store=store)  # fmt: skip


def test_the_knee_layout_keeps_side(tmp_path: Path) -> None:
    knee = require(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "knee-oa-kl")
    store = str(tmp_path / "s")
    medprobe.ingest(source=str(knee), layout="knee", dataset="knee", no_progress=True, store=store)
    sides = medprobe.open_store(store).sql("SELECT metadata->>'side' AS side, count(*) AS n FROM dataset_images "
                                           "GROUP BY 1 ORDER BY 1").to_pylist()  # fmt: skip
    assert [r["side"] for r in sides] == ["L", "R"] and sum(r["n"] for r in sides) == 1000
    assert json.loads(medprobe.open_store(store).sql("SELECT params FROM runs WHERE kind = 'ingest'").column(0)[0]
                      .as_py())["metadata_column"] == []  # fmt: skip
