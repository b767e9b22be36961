"""Retinal fundus layouts: ``eyepacs`` and ``aptos`` (DR grade 0-4), ``airogs`` and ``odir`` (glaucoma)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

from medprobe.errors import InvalidInputError
from medprobe.ingestion.records import (
    FormatOptions,
    ParsedSource,
    Problem,
    SourceRecord,
    abs_uri,
    find_file,
    index_images_by_stem,
    read_csv_rows,
    require_columns,
    require_dir,
    row_metadata,
)

DR_TASK = "dr_grade"
DR_GRADES = ("0", "1", "2", "3", "4")
GLAUCOMA_TASK = "glaucoma"
GLAUCOMA_CLASSES = ("NRG", "RG")  # AIROGS: no referable / referable glaucoma; ODIR keywords map onto the same
_EYE = re.compile(r"^(?P<patient>.+?)_(?:left|right)$", re.IGNORECASE)


def _labelled_records(
    root: Path,
    manifest: Path,
    id_column: str,
    label_column: str,
    task: str,
    allowed: dict[str, str],
    *,
    split: str | None = None,
    group_of: Callable[[str], str | None] | None = None,
) -> tuple[list[SourceRecord], list[Problem]]:
    header, rows = read_csv_rows(manifest)
    require_columns(manifest, header, [id_column, label_column])
    images = index_images_by_stem(root)
    records, problems = [], []
    for line, row in enumerate(rows, start=2):
        image, raw = row[id_column].strip(), row[label_column].strip()
        if raw not in allowed:
            problems.append(Problem(f"{manifest}:{line}", "bad_row", f"{label_column}={raw!r} not in {list(allowed)}"))
            continue
        file = images.get(image)
        if file is None:
            problems.append(Problem(image, "missing", f"no image file named {image}.* under {root}"))
            continue
        records.append(
            SourceRecord(
                source_path=str(file.relative_to(root)),
                labels={task: allowed[raw]},
                split=split,
                group_id=group_of(image) if group_of else None,
                uri=abs_uri(file),
            )
        )
    return records, problems


def eye_patient(image: str) -> str | None:
    """``10_left`` -> ``10``: EyePACS and ODIR name each eye's image after its patient."""
    m = _EYE.match(image)
    return m.group("patient") if m else None


def parse_eyepacs(source: Path, options: FormatOptions) -> ParsedSource:
    """Kaggle EyePACS: ``trainLabels.csv`` (image, level) and ``train/<image>.jpeg``; patients from ``<id>_left``.

    When ``retinopathy_solution.csv`` (image, level, Usage) is present, those images are the test split.
    """
    root = require_dir(source, "the EyePACS source")
    grades = {g: g for g in DR_GRADES}
    manifest = find_file(root, ["trainLabels.csv", "trainLabels.csv.gz"], "trainLabels.csv")
    records, problems = _labelled_records(root, manifest, "image", "level", DR_TASK, grades, group_of=eye_patient)
    solution = [p for p in root.rglob("retinopathy_solution.csv") if p.is_file()]
    if solution:
        records = [_with_split(r, "train") for r in records]
        test, more = _labelled_records(
            root, solution[0], "image", "level", DR_TASK, grades, split="test", group_of=eye_patient
        )
        records += test
        problems += more
    return ParsedSource(
        records=records,
        tasks=[options.task_for(DR_TASK, "ordinal", DR_GRADES, ("level",))],
        group_name="patient (image name before _left/_right)",
        stratify_task=DR_TASK,
        problems=problems,
    )


def _with_split(r: SourceRecord, split: str) -> SourceRecord:
    return dataclasses.replace(r, split=split)


def parse_aptos(source: Path, options: FormatOptions) -> ParsedSource:
    """APTOS 2019: ``train.csv`` (id_code, diagnosis 0-4) and ``train_images/<id_code>.png``; no patient ids."""
    root = require_dir(source, "the APTOS source")
    manifest = find_file(root, ["train.csv"], "train.csv")
    records, problems = _labelled_records(root, manifest, "id_code", "diagnosis", DR_TASK, {g: g for g in DR_GRADES})
    return ParsedSource(
        records=records,
        tasks=[options.task_for(DR_TASK, "ordinal", DR_GRADES, ("diagnosis",))],
        stratify_task=DR_TASK,
        problems=problems,
    )


def parse_airogs(source: Path, options: FormatOptions) -> ParsedSource:
    """AIROGS: ``train_labels.csv`` (challenge_id, class RG/NRG) and ``<challenge_id>.jpg`` in any sub-folder."""
    root = require_dir(source, "the AIROGS source")
    manifest = find_file(root, ["train_labels.csv"], "train_labels.csv")
    records, problems = _labelled_records(
        root, manifest, "challenge_id", "class", GLAUCOMA_TASK, {c: c for c in GLAUCOMA_CLASSES}
    )
    return ParsedSource(
        records=records,
        tasks=[options.task_for(GLAUCOMA_TASK, "binary", GLAUCOMA_CLASSES, ("class",))],
        stratify_task=GLAUCOMA_TASK,
        problems=problems,
    )


ODIR_COLUMNS = ("ID", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords", "Right-Diagnostic Keywords")


ODIR_METADATA = {"age": "Patient Age", "sex": "Patient Sex"}


def parse_odir(source: Path, options: FormatOptions) -> ParsedSource:
    """ODIR-5K: the training annotations saved as CSV (ID, Left-/Right-Fundus, Left-/Right-Diagnostic Keywords).

    One record per eye; ``RG`` when that eye's keywords mention glaucoma (including "suspected glaucoma"),
    else ``NRG``; the patient ``ID`` is the group; per-image metadata: age (``Patient Age``), sex (``Patient Sex``)
    and eye (left | right).
    """
    root = require_dir(source, "the ODIR source")
    manifests = []
    for path in sorted(root.rglob("*.csv")):
        header, _ = read_csv_rows(path)
        if all(c in header for c in ODIR_COLUMNS):
            manifests.append(path)
    if not manifests:
        xlsx = sorted(root.rglob("*.xlsx"))
        hint = f" (found {xlsx[0].name}: save it as CSV)" if xlsx else ""
        raise InvalidInputError(f"{root}: no CSV with the ODIR columns {list(ODIR_COLUMNS)}{hint}")
    header, rows = read_csv_rows(manifests[0])
    images = index_images_by_stem(root)
    records, problems = [], []
    for line, row in enumerate(rows, start=2):
        patient = row["ID"].strip()
        for side in ("Left", "Right"):
            name = row[f"{side}-Fundus"].strip()
            if not name:
                problems.append(Problem(f"{manifests[0]}:{line}", "bad_row", f"empty {side}-Fundus"))
                continue
            file = images.get(Path(name).stem)
            if file is None:
                problems.append(Problem(name, "missing", f"no image file {name} under {root}"))
                continue
            keywords = row[f"{side}-Diagnostic Keywords"].lower()
            records.append(
                SourceRecord(
                    source_path=str(file.relative_to(root)),
                    labels={GLAUCOMA_TASK: "RG" if "glaucoma" in keywords else "NRG"},
                    group_id=patient or None,
                    uri=abs_uri(file),
                    metadata={**row_metadata(row, ODIR_METADATA), "eye": side.lower()},
                )
            )
    return ParsedSource(
        records=records,
        tasks=[
            options.task_for(
                GLAUCOMA_TASK, "binary", GLAUCOMA_CLASSES, ("Left-Diagnostic Keywords", "Right-Diagnostic Keywords")
            )
        ],
        group_name="ID",
        stratify_task=GLAUCOMA_TASK,
        problems=problems,
    )
