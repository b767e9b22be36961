"""``padchest``: the PadChest labels CSV; the ``Labels`` column becomes the multilabel task ``findings``.

Images live at ``<root>/<ImageDir>/<ImageID>`` (the numbered zip folders) or anywhere under the source.
Findings with too few positives are dropped at ingest, counted in the training split only.
"""

from __future__ import annotations

from pathlib import Path

from medprobe.errors import InvalidInputError
from medprobe.ingestion.formats.csv_manifest import parse_findings
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

TASK = "findings"
CSV_NAMES = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",)
EXCLUDE = "exclude"
EXCLUDED_REASON = "padchest: Labels marked 'exclude'"


def _manifest(root: Path) -> Path:
    for name in CSV_NAMES:
        for suffix in ("", ".gz"):
            hits = sorted(root.rglob(name + suffix))
            if hits:
                return hits[0]
    hits = sorted(p for p in root.rglob("PADCHEST*.csv*") if p.is_file())
    if not hits:
        raise InvalidInputError(f"{root}: no PADCHEST_*.csv labels file found")
    return hits[0]


PADCHEST_METADATA = {"sex": "PatientSex_DICOM", "birth_year": "PatientBirth", "projection": "Projection"}


def parse(source: Path, options: FormatOptions) -> ParsedSource:
    """PadChest: ``ImageID``, ``ImageDir``, ``PatientID`` (the group) and ``Labels`` ("['a', 'b']"); per-image
    metadata: sex (``PatientSex_DICOM``), birth_year (``PatientBirth``), projection (``Projection``)."""
    root = require_dir(source, "the PadChest source")
    manifest = _manifest(root)
    header, rows = read_csv_rows(manifest)
    require_columns(manifest, header, ["ImageID", "PatientID", "Labels"])
    by_stem: dict[str, Path] | None = None
    records, problems = [], []
    excluded: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        image = row["ImageID"].strip()
        where = f"{manifest}:{line}"
        raw = (row.get("Labels") or "").strip()
        if raw.lower() in ("", "nan"):
            problems.append(Problem(where, "bad_row", f"{image}: empty Labels"))
            continue
        try:
            findings = parse_findings(raw, ",")
        except ValueError as e:
            problems.append(Problem(where, "bad_row", f"{image}: {e}"))
            continue
        findings = sorted({f.lower() for f in findings})
        if not findings:  # "['']": the report was not labelled (normal studies carry 'normal')
            problems.append(Problem(where, "bad_row", f"{image}: Labels {raw!r} holds no finding"))
            continue
        if EXCLUDE in findings:  # PadChest's marker for studies left out of labelling, not a finding
            excluded[EXCLUDED_REASON] = excluded.get(EXCLUDED_REASON, 0) + 1
            continue
        file = root / (row.get("ImageDir") or "").strip() / image
        if not file.is_file():
            if by_stem is None:
                by_stem = index_images_by_stem(root)
            file = by_stem.get(Path(image).stem, file)
        records.append(
            SourceRecord(
                source_path=str(file.relative_to(root)) if file.is_relative_to(root) else image,
                labels={TASK: findings},
                group_id=row["PatientID"].strip() or None,
                uri=abs_uri(file),
                metadata=row_metadata(row, PADCHEST_METADATA),
            )
        )
    return ParsedSource(
        records=records,
        tasks=[options.task_for(TASK, "multilabel", None, ("Labels",))],
        group_name="PatientID",
        stratify_task=TASK,
        problems=problems,
        excluded=excluded,
    )
