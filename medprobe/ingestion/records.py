"""What a format parser yields: plain records (one per image), declared tasks and rows it had to reject."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medprobe.errors import InvalidInputError

TaskType = Literal["binary", "multiclass", "ordinal", "multilabel"]
Metric = Literal["macro_f1", "macro_auc"]
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "ordinal", "multilabel")
METRICS: tuple[str, ...] = ("macro_f1", "macro_auc")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".gif", ".webp", ".jp2", ".ppm")


def default_metric(task_type: str) -> Metric:
    """Binary and multilabel tasks are scored by macro AUC, multiclass and ordinal ones by macro-F1."""
    return "macro_auc" if task_type in ("binary", "multilabel") else "macro_f1"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One image of a source collection and its labels, before anything is read.

    Exactly one of ``uri`` (a file to read), ``pixels`` (an array, PNG-encoded into the store) and ``data`` (encoded
    image bytes embedded in the source, e.g. base64 in a VQA TSV, kept in the store) is set.
    ``labels`` maps a task name to a class name, or to a list of findings for a multilabel task.
    """

    source_path: str
    labels: dict[str, Any]
    split: str | None = None
    group_id: str | None = None
    uri: str | None = None
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)
    expected_sha256: str | None = None
    data: bytes | None = field(default=None, compare=False, repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)  # per-image facts (age, sex, site), typed by metadata_value


@dataclass(frozen=True)
class TaskSpec:
    """A task a dataset declares. ``class_names`` None for a multilabel task: derived from training counts."""

    name: str
    type: TaskType
    label_columns: tuple[str, ...]
    class_names: tuple[str, ...] | None
    primary_metric: Metric

    @classmethod
    def make(
        cls,
        name: str,
        type: str,
        class_names: Sequence[str] | None,
        label_columns: Sequence[str] | None = None,
        metric: str | None = None,
    ) -> TaskSpec:
        if type not in TASK_TYPES:
            raise InvalidInputError(f"task {name!r}: unknown type {type!r}; use one of {', '.join(TASK_TYPES)}")
        if metric is not None and metric not in METRICS:
            raise InvalidInputError(f"task {name!r}: unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        if type == "binary" and class_names is not None and len(class_names) != 2:
            raise InvalidInputError(f"task {name!r} is binary but has {len(class_names)} classes: {list(class_names)}")
        return cls(
            name=name,
            type=type,  # type: ignore[arg-type]
            label_columns=tuple(label_columns or (name,)),
            class_names=None if class_names is None else tuple(str(c) for c in class_names),
            primary_metric=metric or default_metric(type),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Problem:
    """A source row that cannot become an image (recorded as a ``failures`` row)."""

    path: str
    reason: str
    error: str


@dataclass
class ParsedSource:
    """Everything a format parser found in a source."""

    records: list[SourceRecord]
    tasks: list[TaskSpec]
    group_name: str | None = None  # what group ids are (patient_id, lesion_id); None when there are none
    stratify_task: str | None = None  # the task generated splits are stratified by (default: the first)
    problems: list[Problem] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)  # records left out on purpose, by reason


@dataclass(frozen=True)
class FormatOptions:
    """Options a format may use; each parser reads the ones that apply to its layout."""

    path_column: str | None = None
    label_columns: tuple[str, ...] = ()
    split_column: str | None = None
    group_column: str | None = None
    root: str | None = None
    task: str | None = None  # task name for single-task layouts (imagefolder, medmnist)
    task_types: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    multilabel_separator: str | None = None
    fold_splits: dict[str, str] = field(default_factory=dict)  # PanNuke fold number -> split
    neoplastic_share: str = "area"  # PanNuke: share of all nuclei by pixel "area" or cell "count"
    metadata_columns: tuple[str, ...] = ()  # csv manifests: columns kept as per-image metadata

    def task_for(
        self, name: str, type: str, class_names: Sequence[str] | None, columns: Sequence[str] | None = None
    ) -> TaskSpec:
        """The declared task with the user's --task-type / --metric overrides applied."""
        chosen = self.task_types.get(name, type)
        if chosen == "binary" and class_names is not None and len(class_names) != 2:
            chosen = type
        return TaskSpec.make(name, chosen, class_names, columns, self.metrics.get(name))


# --------------------------------------------------------------------------- helpers for parsers
def abs_uri(path: str | Path) -> str:
    """Absolute, normalised local path of an image (symlinks kept as given: no per-file syscalls)."""
    return os.path.abspath(os.path.expanduser(str(path)))


def natural_key(text: str) -> tuple:
    """Sort key that puts "2" before "10"."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", str(text)))


def sorted_classes(values: Iterable[str]) -> list[str]:
    return sorted({str(v) for v in values}, key=natural_key)


def infer_type(class_names: Sequence[str]) -> str:
    return "binary" if len(class_names) == 2 else "multiclass"


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InvalidInputError(f"{p}: {what} must be a folder, and it is {'a file' if p.exists() else 'missing'}")
    return p


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by extension), sorted by name; hidden files skipped."""
    out = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_file() and not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_EXTENSIONS):
                out.append(Path(entry.path))
    return sorted(out, key=lambda p: p.name)


def index_images_by_stem(root: Path, prefer: Sequence[str] = IMAGE_EXTENSIONS) -> dict[str, Path]:
    """Every image file under ``root`` (recursively) by file name without extension.

    When one stem exists with several extensions, the earliest in ``prefer`` wins (e.g. .jpg over .dcm).
    """
    rank = {ext: i for i, ext in enumerate(prefer)}
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if name.startswith(".") or ext not in rank:
                continue
            old = out.get(stem)
            if old is None or rank[ext] < rank[old.suffix.lower()]:
                out[stem] = Path(dirpath) / name
    return out


def find_file(root: Path, names: Sequence[str], what: str) -> Path:
    """The first file under ``root`` (recursively) whose name is one of ``names`` (case-insensitive)."""
    wanted = {n.lower() for n in names}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower() in wanted:
                return Path(dirpath) / name
    raise InvalidInputError(f"{root}: no {what} found (looked for {', '.join(names)} in every sub-folder)")


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV (UTF-8, BOM tolerated; .gz read transparently). Quoting is strict: an unbalanced
    quote fails naming the line where the last good row ended, instead of swallowing the rest of the file."""
    import csv
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict[str, str]] = []
    last_good = 1
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, strict=True)
            for row in reader:
                rows.append(row)
                last_good = reader.line_num
            header = list(reader.fieldnames or [])
    except csv.Error as e:
        raise InvalidInputError(f"{path}, line {last_good + 1}: cannot read as CSV: {e} (an unbalanced quote "
                                "there?); fix the file and ingest again") from e  # fmt: skip
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path}: cannot read as CSV: {e}") from e
    return header, rows


def metadata_value(raw: Any) -> int | float | str | None:
    """The one rule for a metadata cell: empty and NaN are NULL (None); a number stays a number (an int when it is
    integral, ``63`` and ``63.0`` alike); any other text is kept as written, without surrounding whitespace."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return str(raw).lower()
    text = repr(raw) if isinstance(raw, int | float) else str(raw).strip()
    if not text or text.lower() in ("nan", "none", "null"):
        return None
    value = _finite_number(text)
    if value is None:
        return text
    return int(value) if value.is_integer() else value


def _finite_number(text: str) -> float | None:
    """The value of a cell that is a finite number (``1``, ``1.0``, ``01``, ``1e3``), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def row_metadata(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """``{name: metadata_value(row[column])}`` for each ``name: column`` the row has (layouts that ship metadata)."""
    return {name: metadata_value(row.get(column)) for name, column in columns.items() if column in row}


def canonical_label(raw: str) -> str | None:
    """The one rule for a label cell (csv manifests, --class-names): surrounding whitespace is dropped; empty and
    NaN are missing (None); a number is written by its value, so ``1``, ``1.0`` and ``01`` are the class "1" and
    ``0.50`` is "0.5"; any other text is kept as written."""
    text = raw.strip()
    if not text or text.lower() == "nan":
        return None
    value = _finite_number(text)
    if value is None:
        return text
    return str(int(value)) if value.is_integer() else repr(value)


def require_columns(path: Path, header: Sequence[str], columns: Iterable[str | None]) -> None:
    missing = [c for c in columns if c is not None and c not in header]
    if missing:
        raise InvalidInputError(f"{path}: no column(s) {missing}; the columns are {list(header)}")
