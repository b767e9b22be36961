"""Class-folder layouts: ``imagefolder`` (``root/<split>/<class>/*`` or ``root/<class>/*``) and ``nct-crc``."""

from __future__ import annotations

from pathlib import Path

from medprobe.errors import InvalidInputError
from medprobe.ingestion.records import (
    FormatOptions,
    ParsedSource,
    SourceRecord,
    abs_uri,
    infer_type,
    list_images,
    require_dir,
    sorted_classes,
)
from medprobe.ingestion.splits import is_split_name, normalise_split

NCT_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
NCT_TRAIN = ("NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM")
NCT_TEST = ("CRC-VAL-HE-7K",)


def _subdirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def class_folder_records(
    root: Path, class_root: Path, task: str, split: str | None, prefix: str = ""
) -> list[SourceRecord]:
    """Records of ``class_root/<class>/<image>``; source paths relative to ``root``."""
    records = []
    for class_dir in _subdirs(class_root):
        for path in list_images(class_dir):
            records.append(
                SourceRecord(
                    source_path=prefix + str(path.relative_to(root)),
                    labels={task: class_dir.name},
                    split=split,
                    uri=abs_uri(path),
                )
            )
    return records


def parse(source: Path, options: FormatOptions) -> ParsedSource:
    """``root/<split>/<class>/*`` when every top folder names a split, else ``root/<class>/*``."""
    root = require_dir(source, "the imagefolder source")
    task = options.task or "label"
    top = _subdirs(root)
    if not top:
        raise InvalidInputError(f"{root}: no class folders inside")
    if all(is_split_name(d.name) for d in top):
        records = []
        loose = len(list_images(root))
        for d in top:
            records += class_folder_records(root, d, task, normalise_split(d.name, where=str(d)))
            loose += len(list_images(d))
    else:
        records = class_folder_records(root, root, task, None)
        loose = len(list_images(root))
    if not records:
        raise InvalidInputError(f"{root}: no image files found in its class folders")
    classes = list(options.class_names) or sorted_classes(r.labels[task] for r in records)
    excluded = {"image files outside a class folder (no label)": loose} if loose else {}
    return ParsedSource(
        records=records,
        tasks=[options.task_for(task, infer_type(classes), classes)],
        stratify_task=task,
        excluded=excluded,
    )


def parse_nct_crc(source: Path, options: FormatOptions) -> ParsedSource:
    """NCT-CRC-HE-100K (train) + CRC-VAL-HE-7K (test), 9 tissue classes in class folders."""
    root = require_dir(source, "the NCT-CRC source")
    task = options.task or "tissue"
    found = {d.name: d for d in _subdirs(root)}
    train = [found[n] for n in NCT_TRAIN if n in found][:1]
    test = [found[n] for n in NCT_TEST if n in found]
    if not train and not test:
        raise InvalidInputError(
            f"{root}: expected the folders {NCT_TRAIN[0]}/ (or {NCT_TRAIN[1]}/) and {NCT_TEST[0]}/ "
            f"as unzipped from zenodo.org/record/1214456; found {sorted(found) or 'nothing'}"
        )
    records: list[SourceRecord] = []
    for folder, split in [(d, "train") for d in train] + [(d, "test") for d in test]:
        unknown = sorted({d.name for d in _subdirs(folder)} - set(NCT_CLASSES))
        if unknown:
            raise InvalidInputError(f"{folder}: unknown tissue class folder(s) {unknown}; expected {NCT_CLASSES}")
        records += class_folder_records(root, folder, task, split)
    return ParsedSource(records=records, tasks=[options.task_for(task, "multiclass", NCT_CLASSES)], stratify_task=task)
