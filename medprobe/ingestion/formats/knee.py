"""``knee``: knee radiographs with Kellgren-Lawrence grades 0-4.

Two layouts: the public OAI-derived set (Chen 2018, ``kneeKL224/{train,val,test}/{0..4}/<patient><L|R>.png``;
the ``auto_test`` folder is skipped), or a ``labels.csv`` with columns ``path, kl_grade, split, patient_id``
(and optionally ``sha256``, checked against the file bytes, and ``side``, kept as per-image metadata).
"""

from __future__ import annotations

import re
from pathlib import Path

from medprobe.errors import InvalidInputError
from medprobe.ingestion.formats import csv_manifest
from medprobe.ingestion.records import (
    FormatOptions,
    ParsedSource,
    SourceRecord,
    abs_uri,
    list_images,
    read_csv_rows,
    require_dir,
)
from medprobe.ingestion.splits import is_split_name, normalise_split

TASK = "kl_grade"
GRADES = ("0", "1", "2", "3", "4")
_PATIENT = re.compile(r"(\d{5,8})[LR]?$", re.IGNORECASE)


def patient_from_name(name: str) -> str | None:
    """Patient id ending an OAI-style file name: ``9001695L.png`` or ``train_0_9001695L.png`` -> 9001695."""
    m = _PATIENT.search(Path(name).stem)
    return m.group(1) if m else None


def parse(source: Path, options: FormatOptions) -> ParsedSource:
    """Parse a knee KL-grade collection (labels.csv or split/grade folders)."""
    manifest = source if source.is_file() else source / "labels.csv"
    if manifest.is_file():
        csv_options = FormatOptions(
            path_column=options.path_column or "path",
            label_columns=(TASK,),
            split_column=options.split_column or "split",
            group_column=options.group_column or "patient_id",
            root=options.root or str(manifest.parent),
            task_types={TASK: "ordinal", **options.task_types},
            metrics=options.metrics,
            class_names=GRADES,
            metadata_columns=options.metadata_columns or _present(manifest, ("side",)),
        )
        return csv_manifest.parse(manifest, csv_options)
    return _parse_folders(require_dir(source, "the knee source"), options)


def _present(manifest: Path, columns: tuple[str, ...]) -> tuple[str, ...]:
    """The ``columns`` the manifest's header has (metadata a layout keeps by default when it is there)."""
    header, _ = read_csv_rows(manifest)
    return tuple(c for c in columns if c in header)


def _parse_folders(root: Path, options: FormatOptions) -> ParsedSource:
    records: list[SourceRecord] = []
    excluded: dict[str, int] = {}
    split_dirs = sorted(d for d in root.iterdir() if d.is_dir() and is_split_name(d.name))
    if not split_dirs:
        raise InvalidInputError(f"{root}: expected train/ val/ test/ folders with grade folders 0-4 inside")
    for split_dir in split_dirs:
        split = normalise_split(split_dir.name)
        for grade_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            if grade_dir.name not in GRADES:
                raise InvalidInputError(f"{grade_dir}: grade folders must be named 0-4")
            for path in list_images(grade_dir):
                records.append(
                    SourceRecord(
                        source_path=str(path.relative_to(root)),
                        labels={TASK: grade_dir.name},
                        split=split,
                        group_id=patient_from_name(path.name),
                        uri=abs_uri(path),
                    )
                )
    others = [d.name for d in root.iterdir() if d.is_dir() and not is_split_name(d.name)]
    for name in others:
        excluded[f"folder {name}/ is not a split"] = sum(1 for _ in (root / name).rglob("*.png"))
    return ParsedSource(
        records=records,
        tasks=[options.task_for(TASK, "ordinal", GRADES)],
        group_name="patient_id",
        stratify_task=TASK,
        excluded=excluded,
    )
