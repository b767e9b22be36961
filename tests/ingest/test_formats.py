"""Every format on a small synthetic example of its exact published layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medprobe.errors import InvalidInputError
from medprobe.ingestion.formats import parse_source
from medprobe.ingestion.formats.arrays import pannuke_label
from medprobe.ingestion.pipeline import IngestOptions, ingest
from medprobe.ingestion.records import FormatOptions
from medprobe.ingestion.splits import SplitPlan
from tests.helpers.images import write_jpeg, write_png

QUIET = IngestOptions(show_progress=False)


def _memberships(store, dataset: str) -> list[dict]:
    return store.sql(
        "SELECT source_path, split, group_id, labels FROM dataset_images WHERE dataset = ? ORDER BY source_path",
        [dataset],
    ).to_pylist()


def _task(store, dataset: str, task: str) -> dict:
    rows = store.sql("SELECT * FROM tasks WHERE dataset = ? AND task = ?", [dataset, task]).to_pylist()
    assert len(rows) == 1
    return rows[0]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- csv
def test_csv_manifest_with_labels_split_and_groups(tmp_path, store) -> None:
    rows = []
    for i in range(6):
        write_png(tmp_path / "img" / f"{i}.png", seed=i)
        rows.append([f"img/{i}.png", "yes" if i % 2 else "no", i % 3, "train" if i < 4 else "test", f"P{i // 2}"])
    manifest = _write_csv(tmp_path / "m.csv", ["file", "finding", "grade", "fold", "patient"], rows)
    opts = FormatOptions(
        path_column="file",
        label_columns=("finding", "grade"),
        split_column="fold",
        group_column="patient",
        task_types={"grade": "ordinal"},
    )
    summary = ingest(
        store, manifest, "csv", "toy", opts, IngestOptions(show_progress=False, split_plan=SplitPlan(val_fraction=0))
    )
    assert summary.memberships_new == 6 and summary.failures == 0
    members = _memberships(store, "toy")
    assert [m["split"] for m in members] == ["train"] * 4 + ["test"] * 2
    assert members[3]["group_id"] == "P1" and json.loads(members[3]["labels"]) == {"finding": "yes", "grade": "0"}
    assert _task(store, "toy", "finding")["type"] == "binary"
    grade = _task(store, "toy", "grade")
    assert (
        grade["type"] == "ordinal" and grade["class_names"] == ["0", "1", "2"] and grade["primary_metric"] == "macro_f1"
    )


def test_csv_root_option_and_missing_column(tmp_path) -> None:
    write_png(tmp_path / "data" / "a.png")
    manifest = _write_csv(tmp_path / "meta" / "m.csv", ["path", "y"], [["a.png", 1]])
    parsed = parse_source("csv", manifest, FormatOptions(label_columns=("y",), root=str(tmp_path / "data")))
    assert parsed.records[0].uri == str((tmp_path / "data" / "a.png").resolve())
    with pytest.raises(InvalidInputError, match="no column"):
        parse_source("csv", manifest, FormatOptions(label_columns=("label",)))


# --------------------------------------------------------------------------- imagefolder
def test_imagefolder_with_and_without_split_folders(tmp_path, store) -> None:
    for s, (split, n) in enumerate((("train", 4), ("test", 2))):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(n):
                write_png(tmp_path / "split" / split / cls / f"{i}.png", seed=100 * s + 10 * c + i)
    opts = IngestOptions(show_progress=False, split_plan=SplitPlan(val_fraction=0.25))
    summary = ingest(store, tmp_path / "split", "imagefolder", "pets", FormatOptions(task="animal"), opts)
    assert summary.split_policy.startswith("shipped+val")
    assert summary.split_counts == {"train": 6, "val": 2, "test": 4}
    assert _task(store, "pets", "animal")["class_names"] == ["cat", "dog"]
    for cls in ("a", "b", "c"):
        for i in range(10):
            write_png(tmp_path / "flat" / cls / f"{i}.jpg", seed=100 + i + 20 * ord(cls))
    parsed = parse_source("imagefolder", tmp_path / "flat", FormatOptions())
    assert len(parsed.records) == 30 and {r.split for r in parsed.records} == {None}
    assert parsed.tasks[0].type == "multiclass" and parsed.tasks[0].class_names == ("a", "b", "c")


# --------------------------------------------------------------------------- medmnist
def test_medmnist_npz_pixels_go_into_the_store(tmp_path, store) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 3), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(tmp_path / "toymnist.npz", **arrays)
    opts = FormatOptions(class_names=("normal", "pneumonia"))
    summary = ingest(store, tmp_path / "toymnist.npz", "medmnist", "toy", opts, QUIET)
    assert summary.split_counts == {"train": 8, "val": 3, "test": 4}
    images = store.sql("SELECT uri, in_store, width, format FROM images").to_pylist()
    assert len(images) == 15 and all(i["in_store"] and i["uri"].startswith("store:blobs/images/") for i in images)
    from medprobe.imaging import decode_image

    img = decode_image(store.read_bytes(images[0]["uri"]), source="x")
    assert img.size == (28, 28) and img.mode == "L"
    first = store.sql("SELECT labels FROM dataset_images WHERE source_path = 'train/000001'").column(0).to_pylist()
    assert json.loads(first[0]) == {"label": "pneumonia"}


def test_medmnist_multilabel_columns(tmp_path) -> None:
    np.savez(
        tmp_path / "chest.npz",
        train_images=np.zeros((2, 4, 4, 3), np.uint8),
        train_labels=np.array([[1, 0, 1], [0, 0, 0]], np.uint8),
    )
    parsed = parse_source("medmnist", tmp_path / "chest.npz", FormatOptions(class_names=("a", "b", "c")))
    assert parsed.tasks[0].type == "multilabel"
    assert [r.labels["label"] for r in parsed.records] == [["a", "c"], []]


# --------------------------------------------------------------------------- nct-crc
def test_nct_crc_train_and_test_folders(tmp_path, store) -> None:
    classes = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
    for folder, n in (("NCT-CRC-HE-100K", 3), ("CRC-VAL-HE-7K", 1)):
        for k, cls in enumerate(classes):
            for i in range(n):
                write_png(tmp_path / folder / cls / f"{cls}-{folder[:3]}{i}.tif", seed=1000 * k + 10 * n + i)
    summary = ingest(store, tmp_path, "nct-crc", "crc", FormatOptions(), QUIET)
    assert summary.split_counts["test"] == 9
    assert summary.split_counts["train"] + summary.split_counts["val"] == 27
    assert _task(store, "crc", "tissue")["class_names"] == list(classes)
    with pytest.raises(InvalidInputError, match="NCT-CRC-HE-100K"):
        parse_source("nct-crc", tmp_path / "CRC-VAL-HE-7K", FormatOptions())


# --------------------------------------------------------------------------- pannuke
def _nuclei(mask: np.ndarray, channel: int, n: int, start_id: int, size: int = 3, row0: int = 0) -> None:
    """``n`` square nuclei of ``size`` px on a grid starting at ``row0``, instance ids from ``start_id``."""
    for k in range(n):
        r, c = divmod(k, 10)
        top, left = row0 + r * 5, c * 5
        mask[top : top + size, left : left + size, channel] = start_id + k


def test_pannuke_label_rule() -> None:
    mask = np.zeros((64, 64, 6))
    _nuclei(mask, 1, 5, 100)  # inflammatory nuclei only
    assert pannuke_label(mask) == "benign"
    _nuclei(mask, 0, 12, 1, row0=20)  # 12 neoplastic vs 5 other nuclei of equal size: 70 %
    assert pannuke_label(mask) == "malignant"
    few = np.zeros((64, 64, 6))
    _nuclei(few, 0, 8, 1)  # 8 neoplastic nuclei: not more than 10
    assert pannuke_label(few) is None
    small = np.zeros((64, 64, 6))
    _nuclei(small, 0, 11, 1, size=1)  # 11 tiny neoplastic nuclei: 11 px
    _nuclei(small, 4, 20, 200, size=4, row0=20)  # 20 large epithelial nuclei: 320 px
    assert pannuke_label(small) is None  # by area 11 / 331 = 3 %
    assert pannuke_label(small, share="count") == "malignant"  # by count 11 / 31 = 35 %


def test_pannuke_folds(tmp_path, store) -> None:
    rng = np.random.default_rng(0)
    for fold in (1, 2, 3):
        images_dir = tmp_path / f"Fold {fold}" / "images" / f"fold{fold}"
        masks_dir = tmp_path / f"Fold {fold}" / "masks" / f"fold{fold}"
        images_dir.mkdir(parents=True)
        masks_dir.mkdir(parents=True)
        images = rng.uniform(0, 255, (3, 32, 32, 3))  # float64 like the published arrays
        masks = np.zeros((3, 32, 32, 6))
        masks[..., 5] = 1
        masks[0, :4, :4, 1] = 7  # image 0: one inflammatory nucleus -> benign
        for k in range(12):  # image 1: 12 neoplastic nuclei -> malignant
            masks[1, k * 2 : k * 2 + 1, :2, 0] = k + 1
        masks[2, :1, :1, 0] = 1  # image 2: one neoplastic nucleus -> dropped
        np.save(images_dir / "images.npy", images)
        np.save(images_dir / "types.npy", np.array(["Breast", "Colon", "Lung"]))
        np.save(masks_dir / "masks.npy", masks)
    summary = ingest(store, tmp_path, "pannuke", "pannuke", FormatOptions(), QUIET)
    assert summary.split_counts == {"train": 2, "val": 2, "test": 2}
    assert sum(summary.excluded.values()) == 3
    rows = _memberships(store, "pannuke")
    labels = {r["source_path"]: json.loads(r["labels"]) for r in rows}
    assert labels["fold1/images.npy[0]"] == {"malignancy": "benign", "tissue": "Breast"}
    assert labels["fold3/images.npy[1]"] == {"malignancy": "malignant", "tissue": "Colon"}
    assert _task(store, "pannuke", "malignancy")["primary_metric"] == "macro_auc"


# --------------------------------------------------------------------------- ISIC
def test_isic2018_one_hot_ground_truth_and_lesion_groups(tmp_path, store) -> None:
    classes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    layout = {
        "Training": [f"ISIC_00243{i:02d}" for i in range(14)],
        "Validation": ["ISIC_0034321", "ISIC_0034322"],
        "Test": ["ISIC_0034524", "ISIC_0034525"],
    }
    meta = []
    for part, ids in layout.items():
        gt = []
        for k, image in enumerate(ids):
            write_jpeg(tmp_path / f"ISIC2018_Task3_{part}_Input" / f"{image}.jpg", seed=int(image[-5:]))
            hot = ["0.0"] * 7
            hot[k % 7] = "1.0"
            gt.append([image, *hot])
            if part == "Training":
                meta.append([f"HAM_{k // 2:07d}", image, classes[k % 7].lower(), "histo", 50, "male", "back"])
        _write_csv(
            tmp_path / f"ISIC2018_Task3_{part}_GroundTruth" / f"ISIC2018_Task3_{part}_GroundTruth.csv",
            ["image", *classes],
            gt,
        )
    _write_csv(
        tmp_path / "HAM10000_metadata.csv",
        ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
        meta,
    )
    summary = ingest(store, tmp_path, "isic2018", "isic18", FormatOptions(), QUIET)
    assert summary.split_counts == {"train": 14, "val": 2, "test": 2} and summary.split_policy == "shipped"
    rows = {r["source_path"].split("/")[-1]: r for r in _memberships(store, "isic18")}
    assert rows["ISIC_0024303.jpg"]["group_id"] == "HAM_0000001"
    assert json.loads(rows["ISIC_0024303.jpg"]["labels"]) == {"diagnosis": "AKIEC"}
    assert _task(store, "isic18", "diagnosis")["class_names"] == classes
    kept = store.sql("SELECT metadata FROM dataset_images WHERE dataset = 'isic18' AND metadata IS NOT NULL")
    assert set(json.loads(kept.column(0)[0].as_py())) == {"age", "sex", "localization"}  # HAM10000's metadata


@pytest.mark.parametrize("manifest", ["train.csv", "ISIC_2020_Training_GroundTruth_v2.csv"])
def test_isic2020_train_csv_groups_by_patient(tmp_path, store, manifest) -> None:
    header = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis",
              "benign_malignant", "target"]  # fmt: skip
    rows = []
    for i in range(40):
        name = f"ISIC_{2637011 + i}"
        write_jpeg(tmp_path / "jpeg" / "train" / f"{name}.jpg", seed=i)
        target = int(i % 5 == 0)
        rows.append([name, f"IP_{i // 4:07d}", "male", 45, "torso", "unknown", ["benign", "malignant"][target], target])
    _write_csv(tmp_path / manifest, header, rows)
    summary = ingest(store, tmp_path, "isic2020", "isic20", FormatOptions(), QUIET)
    assert summary.split_policy.startswith("generated:test=0.2,val=0.1,seed=0,group=patient_id")
    members = _memberships(store, "isic20")
    by_patient: dict[str, set] = {}
    for m in members:
        by_patient.setdefault(m["group_id"], set()).add(m["split"])
    assert all(len(s) == 1 for s in by_patient.values())
    assert {json.loads(m["labels"])["melanoma"] for m in members} == {"benign", "malignant"}
    assert _task(store, "isic20", "melanoma")["primary_metric"] == "macro_auc"
    typed = store.sql("SELECT DISTINCT metadata->>'sex' AS sex, (metadata->'age')::INTEGER AS age, metadata->>'site' "
                      "AS site FROM dataset_images WHERE dataset = 'isic20'").to_pylist()  # fmt: skip
    assert typed == [{"sex": "male", "age": 45, "site": "torso"}]


# --------------------------------------------------------------------------- fundus
def test_eyepacs_and_aptos_share_the_dr_grade_task(tmp_path, store) -> None:
    rows = []
    for patient in range(10):
        for eye in ("left", "right"):
            write_jpeg(tmp_path / "eyepacs" / "train" / f"{patient + 10}_{eye}.jpeg", seed=patient * 2 + len(eye))
            rows.append([f"{patient + 10}_{eye}", patient % 5])
    _write_csv(tmp_path / "eyepacs" / "trainLabels.csv", ["image", "level"], rows)
    aptos = []
    for i in range(10):
        write_png(tmp_path / "aptos" / "train_images" / f"000c1434d8d{i}.png", seed=500 + i)
        aptos.append([f"000c1434d8d{i}", i % 5])
    _write_csv(tmp_path / "aptos" / "train.csv", ["id_code", "diagnosis"], aptos)
    a = ingest(store, tmp_path / "eyepacs", "eyepacs", "dr", FormatOptions(), QUIET)
    b = ingest(store, tmp_path / "aptos", "aptos", "dr", FormatOptions(), QUIET)
    assert a.memberships_new == 20 and b.memberships_new == 10 and b.tasks_new == 0
    members = _memberships(store, "dr")
    eyepacs = [m for m in members if m["source_path"].startswith("train/")]
    assert {m["group_id"] for m in eyepacs} == {str(p + 10) for p in range(10)}
    splits_by_patient = {}
    for m in eyepacs:
        splits_by_patient.setdefault(m["group_id"], set()).add(m["split"])
    assert all(len(s) == 1 for s in splits_by_patient.values())
    task = _task(store, "dr", "dr_grade")
    assert task["type"] == "ordinal" and task["class_names"] == ["0", "1", "2", "3", "4"]


def test_airogs_and_odir_glaucoma(tmp_path, store) -> None:
    rows = []
    for i in range(12):
        write_jpeg(tmp_path / "airogs" / str(i % 2) / f"TRAIN{i:06d}.jpg", seed=i)
        rows.append([f"TRAIN{i:06d}", "RG" if i % 3 == 0 else "NRG"])
    rows.append(["TRAIN999999", "RG"])  # listed, no file
    _write_csv(tmp_path / "airogs" / "train_labels.csv", ["challenge_id", "class"], rows)
    summary = ingest(store, tmp_path / "airogs", "airogs", "airogs", FormatOptions(), QUIET)
    assert summary.memberships_new == 12 and summary.failures_by_reason == {"missing": 1}
    assert _task(store, "airogs", "glaucoma")["class_names"] == ["NRG", "RG"]

    header = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords",
              "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O"]  # fmt: skip
    odir = []
    for pid in range(4):
        for side in ("left", "right"):
            write_jpeg(
                tmp_path / "odir" / "ODIR-5K" / "Training Images" / f"{pid}_{side}.jpg", seed=50 + pid * 2 + len(side)
            )
        left = "glaucoma" if pid == 1 else "normal fundus"
        right = "suspected glaucoma" if pid == 2 else "normal fundus"
        odir.append([pid, 60, "Male", f"{pid}_left.jpg", f"{pid}_right.jpg", left, right, 1, 0, 0, 0, 0, 0, 0, 0])
    _write_csv(tmp_path / "odir" / "annotations.csv", header, odir)
    parsed = parse_source("odir", tmp_path / "odir", FormatOptions())
    labels = {Path(r.source_path).name: r.labels["glaucoma"] for r in parsed.records}
    assert labels == {"0_left.jpg": "NRG", "0_right.jpg": "NRG", "1_left.jpg": "RG", "1_right.jpg": "NRG",
                      "2_left.jpg": "NRG", "2_right.jpg": "RG", "3_left.jpg": "NRG", "3_right.jpg": "NRG"}  # fmt: skip
    assert {r.group_id for r in parsed.records} == {"0", "1", "2", "3"}


# --------------------------------------------------------------------------- padchest
def test_padchest_labels_column_multilabel_dropped_by_train_counts_only(tmp_path, store) -> None:
    header = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
              "ViewPosition_DICOM", "Projection", "MethodProjection", "Labels", "Localizations"]  # fmt: skip
    rows = []
    for i in range(60):
        image = f"2168203437954_{i:04d}.png"
        write_png(tmp_path / str(i % 3) / image, seed=i)
        findings = ["normal"] if i % 2 else ["pleural effusion", "cardiomegaly"]
        if i < 3:
            findings.append("pneumothorax")  # 3 positives only
        labels = '"' + repr(findings).replace('"', '""') + '"'
        rows.append([image, i % 3, 20090101, f"S{i}", f"P{i // 2}", 1950, "M", "PA", "PA", "Supine", labels, "[]"])
    rows.append(["missing_labels.png", 0, 20090101, "S", "P99", 1950, "M", "PA", "PA", "Supine", "", "[]"])
    _write_csv(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", header, rows)
    opts = IngestOptions(show_progress=False, min_positives=5, split_plan=SplitPlan(test_fraction=0.3, val_fraction=0))
    summary = ingest(store, tmp_path, "padchest", "padchest", FormatOptions(), opts)
    assert summary.failures_by_reason == {"bad_row": 1}
    assert summary.dropped_findings == {"findings": ["pneumothorax"]}
    task = _task(store, "padchest", "findings")
    assert task["type"] == "multilabel" and task["class_names"] == ["cardiomegaly", "normal", "pleural effusion"]
    members = _memberships(store, "padchest")
    assert all("pneumothorax" not in json.loads(m["labels"])["findings"] for m in members)
    kept = store.sql("SELECT DISTINCT metadata FROM dataset_images WHERE dataset = 'padchest'").column(0).to_pylist()
    assert [json.loads(k) for k in kept] == [{"birth_year": 1950, "projection": "PA", "sex": "M"}]
    patients = {}
    for m in members:
        patients.setdefault(m["group_id"], set()).add(m["split"])
    assert all(len(s) == 1 for s in patients.values())


def test_multilabel_threshold_ignores_test_positives() -> None:
    from medprobe.ingestion.pipeline import _multilabel_classes
    from medprobe.ingestion.records import SourceRecord, TaskSpec

    task = TaskSpec.make("f", "multilabel", None)
    recs = [SourceRecord(str(i), {"f": ["a"] if i < 10 else ["b"]}) for i in range(20)]
    splits = ["train"] * 3 + ["test"] * 7 + ["train"] * 10  # a: 3 train + 7 test positives, b: 10 train
    keep, dropped = _multilabel_classes(task, recs, splits, min_positives=5)
    assert keep == ("b",) and dropped == ["a"]


# --------------------------------------------------------------------------- knee
def test_knee_class_folders_of_the_oai_set(tmp_path, store) -> None:
    for k, (split, n) in enumerate((("train", 2), ("val", 1), ("test", 1))):
        for grade in range(5):
            for i in range(n):
                patient = 9000000 + k * 1000 + grade * 10 + i
                for side in "LR":
                    write_png(tmp_path / split / str(grade) / f"{patient}{side}.png", seed=patient + ord(side) + n)
    write_png(tmp_path / "auto_test" / "0" / "9999999L.png", seed=1)
    summary = ingest(store, tmp_path, "knee", "knee", FormatOptions(), QUIET)
    assert summary.split_counts == {"train": 20, "val": 10, "test": 10}
    assert summary.excluded == {"folder auto_test/ is not a split": 1}
    members = _memberships(store, "knee")
    assert {m["group_id"] for m in members if m["source_path"].startswith("train/0/")} == {"9000000", "9000001"}
    assert _task(store, "knee", "kl_grade")["type"] == "ordinal"


def test_padchest_exclude_marker_and_empty_label_lists_are_not_findings(tmp_path) -> None:
    header = ["ImageID", "ImageDir", "PatientID", "Labels"]
    cells = {
        "a.png": "['normal']",
        "b.png": "['exclude']",
        "c.png": "['']",
        "d.png": "[' pleural effusion', 'cardiomegaly', 'exclude']",
        "e.png": "['pleural effusion', ' cardiomegaly']",
    }
    rows = []
    for i, (image, labels) in enumerate(cells.items()):
        write_png(tmp_path / "0" / image, seed=i)
        rows.append([image, 0, f"P{i}", '"' + labels + '"'])
    _write_csv(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", header, rows)
    parsed = parse_source("padchest", tmp_path, FormatOptions())
    found = {Path(r.source_path).name: r.labels["findings"] for r in parsed.records}
    assert found == {"a.png": ["normal"], "e.png": ["cardiomegaly", "pleural effusion"]}
    assert sum(parsed.excluded.values()) == 2
    assert [p.reason for p in parsed.problems] == ["bad_row"]
