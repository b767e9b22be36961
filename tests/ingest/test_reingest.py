"""Re-ingesting: corrected labels win (history kept), a file whose bytes changed retires its old image, conflicting
duplicate rows are failures; a format-1 store reads on and is migrated by its first write."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from medprobe.featurestore import FeatureStore
from medprobe.ingestion.pipeline import IngestOptions, ingest
from medprobe.ingestion.records import FormatOptions
from medprobe.schemas import FORMAT_VERSION
from tests.helpers.cli import run_cli

QUIET = IngestOptions(show_progress=False)
OPTS = FormatOptions(label_columns=("label",), group_column="patient")


def _write(folder, rows: list[tuple[str, str, str, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,patient"]
    for name, label, patient, value in rows:
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(folder / name)
        lines.append(f"{name},{label},{patient}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")


def _labels(store: FeatureStore) -> dict[str, str]:
    rows = store.sql("SELECT source_path, labels FROM dataset_images WHERE dataset = 'd'").to_pylist()
    return {r["source_path"]: json.loads(r["labels"])["label"] for r in rows}


ROWS = [(f"{i}.png", "ab"[i % 2], f"P{i}", i * 10) for i in range(10)]


def test_a_corrected_label_wins_and_the_history_stays(tmp_path, store: FeatureStore) -> None:
    _write(tmp_path, ROWS)
    ingest(store, tmp_path / "m.csv", "csv", "d", OPTS, QUIET)
    fixed = [("3.png", "a", "P3", 30) if r[0] == "3.png" else r for r in ROWS]
    _write(tmp_path, fixed)
    summary = ingest(store, tmp_path / "m.csv", "csv", "d", OPTS, QUIET)
    assert summary.labels_changed == 1 and summary.memberships_new == 0
    assert _labels(store)["3.png"] == "a"
    # the printed counts are the stored ones
    stored = store.sql("SELECT split, labels FROM dataset_images WHERE dataset = 'd'").to_pylist()
    n_a = sum(json.loads(r["labels"])["label"] == "a" for r in stored)
    assert sum(c["label"].get("a", 0) for c in summary.label_counts.values()) == n_a == 6
    history = store.sql("SELECT labels FROM raw_dataset_images WHERE source_path = '3.png'").column(0).to_pylist()
    assert len(history) == 2
    again = ingest(store, tmp_path / "m.csv", "csv", "d", OPTS, QUIET)
    assert again.labels_changed == 0 and again.already_in_dataset == 10


def test_changed_bytes_retire_the_old_member(tmp_path, store: FeatureStore) -> None:
    _write(tmp_path, ROWS)
    ingest(store, tmp_path / "m.csv", "csv", "d", OPTS, QUIET)
    changed = [("5.png", "b", "P5", 255) if r[0] == "5.png" else r for r in ROWS]
    _write(tmp_path, changed)
    summary = ingest(store, tmp_path / "m.csv", "csv", "d", OPTS, QUIET)
    assert summary.retired == 1 and summary.memberships_new == 1
    members = store.sql("SELECT source_path, count(*) AS n FROM dataset_images GROUP BY 1").to_pylist()
    assert len(members) == 10 and all(m["n"] == 1 for m in members)  # one path, one member


def test_conflicting_duplicates_are_failures_and_fail_strict(tmp_path, store: FeatureStore, capsys) -> None:
    _write(tmp_path, ROWS[:4])
    with open(tmp_path / "m.csv", "a") as f:
        f.write("0.png,b,P0\n")  # the same file again with another label
    summary = ingest(store, tmp_path / "m.csv", "csv", "d", OPTS, QUIET)
    assert summary.conflicts == 1 and summary.failures_by_reason == {"conflict": 1}
    args = ["ingest", str(tmp_path / "m.csv"), "--layout", "csv", "-d", "e", "--label-column", "label",
            "--group-column", "patient", "-s", store.url]  # fmt: skip
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "conflicting duplicate rows" in out
    code, _, err = run_cli(capsys, *args, "--strict")
    assert code != 0 and "--strict" in err


def test_a_format_1_store_reads_and_is_migrated_by_its_first_write(tmp_path) -> None:
    url = str(tmp_path / "old")
    store = FeatureStore.open(url)
    (tmp_path / "old" / "medprobe.json").write_text(json.dumps({"format_version": 1}))
    old = pa.table({  # a format-1 fragment: no `retired` column
        "dataset": ["d"], "image_hash": ["a" * 64], "split": ["train"], "group_id": [None], "source_path": ["x.png"],
        "labels": ['{"label": "a"}'], "ingested_at": pa.array([0], pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    folder = tmp_path / "old" / "tables" / "dataset_images"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(old, folder / "20260101T000000000000-000000000000.parquet")
    store = FeatureStore.open(url, create=False)
    # a column older fragments lack reads as the row model's default (retired=False), as a new write would store
    assert store.sql("SELECT retired FROM raw_dataset_images").column(0).to_pylist() == [False]
    assert store.sql("SELECT count(*) FROM dataset_images").column(0)[0].as_py() == 1
    assert store.info["format_version"] == 1
    store.append("datasets", [])  # nothing to write: no migration
    assert json.loads((tmp_path / "old" / "medprobe.json").read_text())["format_version"] == 1
    _write(tmp_path / "src", ROWS[:2])
    ingest(store, tmp_path / "src" / "m.csv", "csv", "d2", OPTS, QUIET)
    marker = json.loads((tmp_path / "old" / "medprobe.json").read_text())
    assert marker["format_version"] == FORMAT_VERSION and marker["migrations"][0]["from"] == 1


def test_an_arrow_table_without_the_format_2_columns_still_appends(store: FeatureStore) -> None:
    rows = pa.table({
        "dataset": ["d"], "image_hash": ["b" * 64], "split": ["train"], "group_id": [None], "source_path": ["y.png"],
        "labels": ['{"label": "a"}'], "ingested_at": pa.array([0], pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    store.append("dataset_images", rows)
    assert store.sql("SELECT retired FROM raw_dataset_images").column(0).to_pylist() == [False]
