"""Ingest end to end: idempotence, reuse across datasets, --copy, failures, pinned splits, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medprobe.featurestore import FeatureStore
from medprobe.ingestion.pipeline import IngestOptions, ingest
from medprobe.ingestion.records import FormatOptions
from medprobe.ingestion.splits import SplitPlan
from tests.helpers.cli import run_cli
from tests.helpers.images import png_with_huge_header, write_png

QUIET = IngestOptions(show_progress=False)
TABLES = ("images", "datasets", "tasks", "dataset_images", "failures")


def _raw_counts(store) -> dict[str, int]:
    return {t: store.sql(f"SELECT count(*) FROM raw_{t}").column(0)[0].as_py() for t in TABLES}


def _manifest(path: Path, rows: list[tuple]) -> Path:
    path.write_text("path,label,patient\n" + "".join(f"{p},{y},{g}\n" for p, y, g in rows))
    return path


def _collection(root: Path, n: int, seed0: int = 0) -> list[tuple]:
    rows = []
    for i in range(n):
        write_png(root / f"img{seed0 + i}.png", seed=seed0 + i)
        rows.append((f"img{seed0 + i}.png", "ab"[i % 2], f"P{(seed0 + i) // 2}"))
    return rows


CSV = FormatOptions(label_columns=("label",), group_column="patient")


def test_rerun_is_a_noop_and_overlap_reuses_images(tmp_path, store) -> None:
    rows = _collection(tmp_path, 20)
    first = ingest(store, _manifest(tmp_path / "a.csv", rows), "csv", "a", CSV, QUIET)
    assert first.images_new == 20 and first.memberships_new == 20
    before = _raw_counts(store)
    again = ingest(store, tmp_path / "a.csv", "csv", "a", CSV, QUIET)
    assert again.images_new == again.memberships_new == again.tasks_new == again.failures_new == 0
    assert again.already_in_dataset == 20
    assert _raw_counts(store) == before
    # a second collection sharing 10 of the files (and 5 new ones)
    rows_b = rows[10:] + _collection(tmp_path, 5, seed0=100)
    other = ingest(store, _manifest(tmp_path / "b.csv", rows_b), "csv", "b", CSV, QUIET)
    assert other.images_reused == 10 and other.images_new == 5 and other.memberships_new == 15
    assert store.sql("SELECT count(*) FROM raw_images").column(0)[0].as_py() == 25
    shared = store.sql(
        "SELECT count(*) FROM dataset_images a JOIN dataset_images b USING (image_hash) "
        "WHERE a.dataset = 'a' AND b.dataset = 'b'"
    )
    assert shared.column(0)[0].as_py() == 10


def test_image_hash_is_the_sha256_of_the_file_bytes_and_copy_stores_them(tmp_path, store) -> None:
    rows = _collection(tmp_path, 3)
    ingest(store, _manifest(tmp_path / "a.csv", rows), "csv", "a", CSV, IngestOptions(show_progress=False, copy=True))
    for row in store.sql("SELECT image_hash, uri, in_store, n_bytes FROM images").to_pylist():
        assert row["in_store"] and row["uri"] == f"store:blobs/images/{row['image_hash'][:2]}/{row['image_hash']}.png"
        data = store.read_bytes(row["uri"])
        assert hashlib.sha256(data).hexdigest() == row["image_hash"] and len(data) == row["n_bytes"]
    files = {hashlib.sha256((tmp_path / p).read_bytes()).hexdigest() for p, _, _ in rows}
    assert files == set(store.sql("SELECT image_hash FROM images").column(0).to_pylist())


def test_bad_files_become_failures_and_nothing_stored_changes(tmp_path, store) -> None:
    rows = _collection(tmp_path, 10)
    ingest(store, _manifest(tmp_path / "a.csv", rows), "csv", "a", CSV, QUIET)
    images_before = store.table("images").sort_by("image_hash").to_pylist()
    members_before = store.table("dataset_images").sort_by("image_hash").to_pylist()

    good = write_png(tmp_path / "good.png", seed=999)
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(write_png(tmp_path / "tmp.png", seed=5, size=(64, 64))[:200])
    (tmp_path / "notes.png").write_text("not an image at all\n")
    (tmp_path / "bomb.png").write_bytes(png_with_huge_header())
    bad = [(n, "a", f"X{k}") for k, n in enumerate(["zero.png", "cut.png", "notes.png", "bomb.png", "gone.png"])]
    relabelled = [(p, "b" if y == "a" else "a", "Q" + g) for p, y, g in rows]  # same files, new labels/groups
    manifest = _manifest(tmp_path / "b.csv", [*relabelled, ("good.png", "a", "P99"), *bad])
    summary = ingest(store, manifest, "csv", "a", CSV, QUIET)
    assert summary.failures_by_reason == {
        "decompression_bomb": 1,
        "empty": 1,
        "missing": 1,
        "not_an_image": 1,
        "truncated": 1,
    }
    assert summary.memberships_new == 1 and summary.images_new == 1
    assert summary.labels_changed == 10  # the same files relabelled: corrections, the new labels win
    failures = store.sql("SELECT path, reason, error, stage, dataset FROM failures ORDER BY reason").to_pylist()
    assert [Path(f["path"]).name for f in failures] == ["bomb.png", "zero.png", "gone.png", "notes.png", "cut.png"]
    assert all(f["stage"] == "ingest" and f["dataset"] == "a" and f["error"] for f in failures)
    # images stored by the first ingest are exactly as they were; members keep their split and group (a split
    # never moves), their labels are the corrected ones, and the first rows stay in raw_dataset_images
    after = {r["image_hash"]: r for r in store.table("images").to_pylist()}
    assert all(after[r["image_hash"]] == r for r in images_before)
    members_after = {r["image_hash"]: r for r in store.table("dataset_images").to_pylist()}
    keep = ("split", "group_id", "source_path")
    assert all({k: members_after[r["image_hash"]][k] for k in keep} == {k: r[k] for k in keep} for r in members_before)
    assert all(members_after[r["image_hash"]]["labels"] != r["labels"] for r in members_before)
    raw = store.sql("SELECT count(*) FROM raw_dataset_images WHERE dataset = 'a'").column(0)[0].as_py()
    assert raw == 2 * len(members_before) + 1
    assert hashlib.sha256(good).hexdigest() in members_after
    # the same failures are not recorded twice
    before = _raw_counts(store)
    ingest(store, manifest, "csv", "a", CSV, QUIET)
    assert _raw_counts(store) == before


def test_manifest_sha256_mismatch_is_a_failure(tmp_path, store) -> None:
    data = write_png(tmp_path / "x.png", seed=1)
    write_png(tmp_path / "y.png", seed=2)
    right = hashlib.sha256(data).hexdigest()
    (tmp_path / "m.csv").write_text(f"path,label,sha256\nx.png,a,{right}\ny.png,b,{'0' * 64}\n")
    summary = ingest(store, tmp_path / "m.csv", "csv", "m", FormatOptions(label_columns=("label",)), QUIET)
    assert summary.memberships_new == 1 and summary.failures_by_reason == {"hash_mismatch": 1}


def test_reingest_keeps_a_patient_on_one_side(tmp_path, store) -> None:
    rows = _collection(tmp_path, 40)
    plan = IngestOptions(show_progress=False, split_plan=SplitPlan(test_fraction=0.3, val_fraction=0, seed=3))
    ingest(store, _manifest(tmp_path / "a.csv", rows), "csv", "a", CSV, plan)
    stored = store.sql("SELECT group_id, split FROM dataset_images").to_pylist()
    split_of = {r["group_id"]: r["split"] for r in stored}
    assert set(split_of.values()) == {"train", "test"}
    extra = []
    for k in range(20):  # one more image for each existing patient
        write_png(tmp_path / f"more{k}.png", seed=500 + k)
        extra.append((f"more{k}.png", "a", f"P{k}"))
    summary = ingest(store, _manifest(tmp_path / "b.csv", rows + extra), "csv", "a", CSV, plan)
    assert summary.memberships_new == 20
    final = store.sql("SELECT group_id, split FROM dataset_images").to_pylist()
    assert all(split_of[r["group_id"]] == r["split"] for r in final)


def test_cli_ingest_exit_codes_and_datasets(tmp_path, capsys) -> None:
    store_dir = tmp_path / "store"
    rows = _collection(tmp_path, 6)
    (tmp_path / "zero.png").write_bytes(b"")
    manifest = _manifest(tmp_path / "m.csv", [*rows, ("zero.png", "a", "P9")])
    args = ["ingest", str(manifest), "--layout", "csv", "--dataset", "toy", "--label-column", "label",
            "--group-column", "patient", "--store", str(store_dir)]  # fmt: skip
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    assert "1 failure(s)" in out and "empty 1" in out
    code, _, err = run_cli(capsys, *args, "--strict")
    assert code == 3  # bad input data
    assert "could not be ingested (--strict)" in err
    code, out, _ = run_cli(capsys, "datasets", "--store", str(store_dir))
    assert code == 0
    assert "toy" in out and "label" in out
    code, out, _ = run_cli(capsys, *args[:-2], "--store", str(store_dir), "--format", "json")
    summary = json.loads(out)
    assert summary["already_in_dataset"] == 6 and summary["memberships_new"] == 0
    reopened = FeatureStore.open(str(store_dir), create=False)
    assert reopened.sql("SELECT count(*) FROM dataset_images").column(0)[0].as_py() == 6


def test_a_row_with_an_undeclared_class_is_a_failure_not_an_abort(tmp_path, store) -> None:
    write_png(tmp_path / "a.png", seed=1)
    write_png(tmp_path / "b.png", seed=2)
    (tmp_path / "labels.csv").write_text("path,kl_grade,split,patient_id\na.png,2,train,1\nb.png,7,val,2\n")
    summary = ingest(store, tmp_path, "knee", "knee", FormatOptions(), QUIET)
    assert summary.memberships_new == 1 and summary.failures_by_reason == {"bad_row": 1}
    error = store.sql("SELECT error FROM failures").column(0)[0].as_py()
    assert "kl_grade='7'" in error
