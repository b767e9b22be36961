"""The shared real data: knee radiographs (labels.csv layout) and PneumoniaMNIST, in slices and in full."""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict

from medprobe.ingestion.pipeline import IngestOptions, ingest
from medprobe.ingestion.records import FormatOptions

QUIET = IngestOptions(show_progress=False)


def _labels(shared_data) -> list[dict]:
    with open(shared_data / "knee-oa-kl" / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_knee_slice_hashes_groups_and_labels(shared_data, store, tmp_path) -> None:
    rows = _labels(shared_data)
    by_patient = defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(r)
    both_knees = [p for p, rs in by_patient.items() if len(rs) == 2][:10]
    subset = [r for p in both_knees for r in by_patient[p]] + rows[:20] + rows[-20:]
    subset = list({r["path"]: r for r in subset}.values())
    manifest = tmp_path / "labels.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(subset)
    opts = FormatOptions(root=str(shared_data / "knee-oa-kl"))
    summary = ingest(store, manifest, "knee", "knee-slice", opts, QUIET)
    assert summary.memberships_new == len(subset) and summary.failures == 0
    stored = {
        r["source_path"]: r
        for r in store.sql("SELECT source_path, image_hash, group_id, split, labels FROM dataset_images").to_pylist()
    }
    for r in subset:
        row = stored[r["path"]]
        assert row["image_hash"] == r["sha256"]  # the store's identity is the published sha256 of the file
        assert row["group_id"] == r["patient_id"] and row["split"] == r["split"]
        assert row["labels"] == f'{{"kl_grade":"{r["kl_grade"]}"}}'
    for p in both_knees:
        assert len({stored[r["path"]]["split"] for r in by_patient[p]}) == 1
    first = (shared_data / "knee-oa-kl" / subset[0]["path"]).read_bytes()
    assert hashlib.sha256(first).hexdigest() == subset[0]["sha256"]
    modes = store.sql("SELECT DISTINCT mode, bit_depth, width, height FROM images").to_pylist()
    assert modes == [{"mode": "L", "bit_depth": 8, "width": 224, "height": 224}]


def test_knee_generated_split_groups_patients(shared_data, store, tmp_path) -> None:
    rows = [r for r in _labels(shared_data)][:300]
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "kl_grade", "patient_id"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("path", "kl_grade", "patient_id")} for r in rows)
    opts = FormatOptions(
        label_columns=("kl_grade",), group_column="patient_id", root=str(shared_data / "knee-oa-kl"),
        task_types={"kl_grade": "ordinal"},
    )  # fmt: skip
    summary = ingest(store, manifest, "csv", "knee-gen", opts, QUIET)
    assert summary.split_policy.startswith("generated:") and set(summary.split_counts) == {"train", "val", "test"}
    sides = defaultdict(set)
    for r in store.sql("SELECT group_id, split FROM dataset_images").to_pylist():
        sides[r["group_id"]].add(r["split"])
    assert all(len(s) == 1 for s in sides.values())


def test_full_shared_data_ingests_with_the_expected_counts(shared_data, store) -> None:
    knee = ingest(store, shared_data / "knee-oa-kl", "knee", "knee", FormatOptions(), QUIET)
    assert knee.split_counts == {"train": 600, "val": 400} and knee.failures == 0 and knee.duplicates == 0
    opts = FormatOptions(class_names=("normal", "pneumonia"))
    pneu = ingest(store, shared_data / "pneumoniamnist.npz", "medmnist", "pneumoniamnist", opts, QUIET)
    # 28 images are pixel-identical copies of another (17 within train, 8 train->val, 3 within test): one
    # image hash is one dataset member, so the copies are counted as duplicates, never put on two sides; the 8
    # copies shipped in another split than their original are `conflict` failures (the first row is kept)
    assert pneu.records == 3882 + 524 + 624 and pneu.failures_by_reason == {"conflict": 8}
    recorded = {s: pneu.split_counts.get(s, 0) + pneu.duplicates_by_split.get(s, 0) for s in ("train", "val", "test")}
    assert recorded == {"train": 3882, "val": 524, "test": 624}
    assert pneu.duplicates == 28 and pneu.duplicate_label_conflicts == 0
    assert store.sql("SELECT count(*) FROM images").column(0)[0].as_py() == 1000 + 5002
