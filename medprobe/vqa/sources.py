"""Which layout a VQA source is in, and its items read by that layout's reader (:mod:`medprobe.vqa.items` for
table, vqa-rad and nejm; :mod:`medprobe.vqa.layouts` for the other published benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medprobe.errors import InvalidInputError
from medprobe.vqa.items import VQA_RAD_JSON, ReadReport, SourceItem, read_nejm, read_table, read_vqa_rad
from medprobe.vqa.layouts import NEW_LAYOUTS, detect_new_layout, read_new_layout


def detect_layout(source: Path) -> str:
    """The layout ``source`` looks like: ``vqa-rad`` (its JSON, or a folder with it), one of the published layouts
    of :mod:`medprobe.vqa.layouts`, ``table`` for another file, ``nejm`` for a folder of case folders."""
    if not source.exists():
        raise InvalidInputError(f"{source}: no such file or folder")
    if source.name == VQA_RAD_JSON or (source / VQA_RAD_JSON).is_file():
        return "vqa-rad"
    found = detect_new_layout(source)
    if found is not None:
        return found
    if source.is_file():
        return "table"
    if any(p.is_dir() for p in source.iterdir()):
        return "nejm"
    raise InvalidInputError(
        f"{source}: cannot tell its layout (a .jsonl/.csv/.tsv file, a VQA-RAD, SLAKE, PathVQA or OmniMedVQA folder, "
        "a PMC-VQA CSV, VQA-Med qa_pairs, or a folder of NEJM case folders); pass --layout"
    )


def read_items(source: Path, layout: str, report: ReadReport) -> Iterator[SourceItem]:
    """The items of ``source`` in ``layout``."""
    if layout == "table":
        yield from read_table(source)
    elif layout == "vqa-rad":
        yield from read_vqa_rad(source, report)
    elif layout == "nejm":
        yield from read_nejm(source, report)
    elif layout in NEW_LAYOUTS:
        yield from read_new_layout(source, layout, report)
    else:
        raise InvalidInputError(f"--layout {layout!r}: choose from table, vqa-rad, nejm, {', '.join(NEW_LAYOUTS)}")
