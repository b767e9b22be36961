"""Dermoscopy layouts: ``isic2018`` (task 3 one-hot ground truth) and ``isic2020`` (``train.csv``)."""

from __future__ import annotations

from pathlib import Path

from medprobe.errors import InvalidInputError
from medprobe.ingestion.records import (
    FormatOptions,
    ParsedSource,
    Problem,
    SourceRecord,
    abs_uri,
    index_images_by_stem,
    read_csv_rows,
    require_columns,
    require_dir,
    row_metadata,
)

ISIC2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC2018_GT = {
    "train": "ISIC2018_Task3_Training_GroundTruth.csv",
    "val": "ISIC2018_Task3_Validation_GroundTruth.csv",
    "test": "ISIC2018_Task3_Test_GroundTruth.csv",
}
# lesion ids: HAM10000's metadata (lesion_id, image_id, ...) or ISIC's lesion groupings (image, lesion_id, ...)
ISIC2018_LESIONS = ("HAM10000_metadata.csv", "HAM10000_metadata", "ISIC2018_Task3_Training_LesionGroupings.csv")
JPEG_FIRST = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm")


# the Kaggle copy ships train.csv; the ISIC archive ships the ground truth CSV (v2 corrects some duplicates)
ISIC2020_MANIFESTS = ("train.csv", "ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv")


def _find_all(root: Path, name: str) -> list[Path]:
    return sorted(p for p in root.rglob(name) if p.is_file())


HAM10000_METADATA = {"age": "age", "sex": "sex", "localization": "localization"}
ISIC2020_METADATA = {"age": "age_approx", "sex": "sex", "site": "anatom_site_general_challenge"}


def _lesion_ids(root: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """Lesion id and metadata (age, sex, localization) per image, from the HAM10000 metadata CSV."""
    out: dict[str, str] = {}
    metadata: dict[str, dict] = {}
    for name in ISIC2018_LESIONS:
        for path in _find_all(root, name):
            header, rows = read_csv_rows(path)
            image_col = "image_id" if "image_id" in header else "image"
            require_columns(path, header, [image_col, "lesion_id"])
            for row in rows:
                image = row[image_col].strip()
                if row.get("lesion_id"):
                    out.setdefault(image, row["lesion_id"].strip())
                metadata.setdefault(image, row_metadata(row, HAM10000_METADATA))
    return out, metadata


def parse_isic2018(source: Path, options: FormatOptions) -> ParsedSource:
    """ISIC 2018 task 3: the Training/Validation/Test ground-truth CSVs (``image`` + one-hot MEL..VASC); the HAM10000
    metadata CSV, when present, gives lesion ids (grouped splits) and per-image metadata (age, sex, localization)."""
    root = require_dir(source, "the ISIC 2018 source")
    task = options.task or "diagnosis"
    images = index_images_by_stem(root, JPEG_FIRST)
    lesions, metadata = _lesion_ids(root)
    records: list[SourceRecord] = []
    problems: list[Problem] = []
    found_any = False
    for split, name in ISIC2018_GT.items():
        for path in _find_all(root, name):
            found_any = True
            header, rows = read_csv_rows(path)
            require_columns(path, header, ["image", *ISIC2018_CLASSES])
            for line, row in enumerate(rows, start=2):
                image = row["image"].strip()
                try:
                    hot = [float(row[c] or 0) for c in ISIC2018_CLASSES]
                except ValueError as e:
                    problems.append(Problem(f"{path}:{line}", "bad_row", f"non-numeric one-hot value: {e}"))
                    continue
                if sum(v > 0.5 for v in hot) != 1:
                    problems.append(Problem(f"{path}:{line}", "bad_row", f"{image}: not exactly one class set"))
                    continue
                file = images.get(image)
                if file is None:
                    problems.append(Problem(image, "missing", f"no image file {image}.jpg under {root}"))
                    continue
                records.append(
                    SourceRecord(
                        source_path=str(file.relative_to(root)),
                        labels={task: ISIC2018_CLASSES[hot.index(max(hot))]},
                        split=split,
                        group_id=lesions.get(image),
                        uri=abs_uri(file),
                        metadata=metadata.get(image, {}),
                    )
                )
    if not found_any:
        raise InvalidInputError(f"{root}: none of {list(ISIC2018_GT.values())} found")
    return ParsedSource(
        records=records,
        tasks=[options.task_for(task, "multiclass", ISIC2018_CLASSES, ISIC2018_CLASSES)],
        group_name="lesion_id" if lesions else None,
        stratify_task=task,
        problems=problems,
    )


def parse_isic2020(source: Path, options: FormatOptions) -> ParsedSource:
    """ISIC 2020: ``train.csv`` (``image_name``, ``patient_id``, ``target`` 0/1) and the JPEG (or DICOM) images;
    per-image metadata: age (``age_approx``), sex, site (``anatom_site_general_challenge``)."""
    root = require_dir(source, "the ISIC 2020 source")
    task = options.task or "melanoma"
    candidates = [p for name in ISIC2020_MANIFESTS for p in _find_all(root, name)]
    if not candidates:
        raise InvalidInputError(f"{root}: none of {', '.join(ISIC2020_MANIFESTS)} found")
    manifest = candidates[0]
    header, rows = read_csv_rows(manifest)
    require_columns(manifest, header, ["image_name", "patient_id", "target"])
    images = index_images_by_stem(root, JPEG_FIRST)
    records: list[SourceRecord] = []
    problems: list[Problem] = []
    for line, row in enumerate(rows, start=2):
        image = row["image_name"].strip()
        target = row["target"].strip()
        if target not in ("0", "1"):
            problems.append(Problem(f"{manifest}:{line}", "bad_row", f"target {target!r} is not 0 or 1"))
            continue
        file = images.get(image)
        if file is None:
            problems.append(Problem(image, "missing", f"no image file {image}.jpg/.dcm under {root}"))
            continue
        records.append(
            SourceRecord(
                source_path=str(file.relative_to(root)),
                labels={task: "malignant" if target == "1" else "benign"},
                group_id=row["patient_id"].strip() or None,
                uri=abs_uri(file),
                metadata=row_metadata(row, ISIC2020_METADATA),
            )
        )
    return ParsedSource(
        records=records,
        tasks=[options.task_for(task, "binary", ("benign", "malignant"), ("target",))],
        group_name="patient_id",
        stratify_task=task,
        problems=problems,
    )
