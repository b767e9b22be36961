"""``csv``: any manifest with a path column, label columns, and optionally split and group columns."""

from __future__ import annotations

import ast
from pathlib import Path

from medprobe.errors import InvalidInputError
from medprobe.ingestion.records import (
    FormatOptions,
    ParsedSource,
    Problem,
    SourceRecord,
    TaskSpec,
    abs_uri,
    canonical_label,
    infer_type,
    metadata_value,
    read_csv_rows,
    require_columns,
    sorted_classes,
)
from medprobe.ingestion.splits import normalise_split

SHA256_COLUMN = "sha256"


def parse_findings(text: str, separator: str | None) -> list[str]:
    """Multilabel cell -> findings: a Python list literal ("['a', 'b']") or ``separator``-joined text."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"cannot parse list {text[:60]!r}: {e}") from e
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {text[:60]!r}")
        items = [str(v) for v in value]
    else:
        items = text.split(separator or "|")
    return sorted({i.strip() for i in items if i is not None and i.strip()})


def resolve_path(value: str, root: Path) -> str:
    """Absolute path (or URL) of a manifest's path cell."""
    if "://" in value:
        return value
    return abs_uri(Path(root) / Path(value).expanduser())


def parse(source: Path, options: FormatOptions) -> ParsedSource:
    """Parse a CSV manifest; each ``--label-column`` becomes a task named after the column."""
    if source.is_dir():
        raise InvalidInputError(f"{source}: the csv format takes the manifest file, not a folder")
    path_column = options.path_column or "path"
    header, rows = read_csv_rows(source)
    require_columns(source, header, [path_column, *options.label_columns, options.split_column, options.group_column,
                                     *options.metadata_columns])  # fmt: skip
    root = Path(options.root).expanduser() if options.root else source.parent
    has_sha = SHA256_COLUMN in header
    multilabel = {c for c in options.label_columns if options.task_types.get(c) == "multilabel"}

    records: list[SourceRecord] = []
    problems: list[Problem] = []
    values: dict[str, set[str]] = {c: set() for c in options.label_columns}
    for line, row in enumerate(rows, start=2):
        where = f"{source}:{line}"
        cell = (row.get(path_column) or "").strip()
        if not cell:
            problems.append(Problem(where, "bad_row", f"empty {path_column!r} cell"))
            continue
        labels: dict[str, object] = {}
        try:
            for column in options.label_columns:
                raw = (row.get(column) or "").strip()
                if column in multilabel:
                    findings = parse_findings(raw, options.multilabel_separator)
                    labels[column] = findings
                    values[column].update(findings)
                elif (value := canonical_label(raw)) is not None:  # numbers by value; empty and NaN: missing
                    labels[column] = value
                    values[column].add(value)
                else:  # kept as a member without this task's label, and counted as a failure row that says so
                    why = f"{column!r} is {raw or 'empty'}: the image is kept without a label for this task"
                    problems.append(Problem(where, "missing_label", why))
            split = None
            if options.split_column and (row.get(options.split_column) or "").strip():
                split = normalise_split(row[options.split_column], where=where)
        except (ValueError, InvalidInputError) as e:
            problems.append(Problem(where, "bad_row", str(e)))
            continue
        group = (row.get(options.group_column) or "").strip() or None if options.group_column else None
        records.append(
            SourceRecord(
                source_path=cell,
                labels=labels,
                split=split,
                group_id=group,
                uri=resolve_path(cell, root),
                expected_sha256=(row.get(SHA256_COLUMN) or "").strip().lower() or None if has_sha else None,
                metadata={c: metadata_value(row.get(c)) for c in options.metadata_columns},
            )
        )

    tasks: list[TaskSpec] = []
    for column in options.label_columns:
        if column in multilabel:
            tasks.append(options.task_for(column, "multilabel", None))
            continue
        declared = [canonical_label(c) or c for c in options.class_names]
        classes = declared if declared else sorted_classes(values[column])
        tasks.append(options.task_for(column, infer_type(classes), classes))
        if set(values[column]) - set(classes):  # rows whose value is not a declared class
            allowed = set(classes)
            kept = []
            for r in records:
                value = r.labels.get(column)
                if value is None or value in allowed:
                    kept.append(r)
                else:
                    problems.append(Problem(r.source_path, "bad_row", f"{column}={value!r} is not one of {classes}"))
            records = kept
    return ParsedSource(
        records=records,
        tasks=tasks,
        group_name=options.group_column,
        stratify_task=options.label_columns[0] if options.label_columns else None,
        problems=problems,
    )
