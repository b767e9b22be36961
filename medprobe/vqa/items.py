"""Items from their sources: a JSONL/CSV/TSV file, VQA-RAD as published, or the NEJM case layout (the other
published layouts are in :mod:`medprobe.vqa.layouts`).

An item is multiple choice (options A, B, ... and a gold letter) or open-ended (no options; the answer is the
reference text, scored by :mod:`medprobe.vqa.open_answers`).

Every reader yields :class:`SourceItem` (image files still as paths); ``medprobe.vqa.item_ingest`` hashes the images and
writes ``vqa_items``. Layouts:

* ``table`` (``.jsonl``/``.json``/``.csv``/``.tsv``): columns ``id`` (or ``index``), ``image`` (a path relative to the
  file, a JSON list of paths, or base64 image bytes as the common evaluation TSVs embed them), ``question``,
  optional ``context`` (or ``hint``), the options as ``options`` (a JSON object ``{"A": ...}``) or as columns
  ``A``..``J`` (the common evaluation TSVs), ``answer`` (a letter, or the text of one option; without options the
  item is open-ended and ``answer`` is its reference text), optional ``group_id``, ``category``, ``categories`` (an
  object of category columns, e.g. ``{"question_type": "PRES", "organ": "CHEST"}``), ``split`` (default test).
* ``vqa-rad``: the folder holding ``VQA_RAD Dataset Public.json`` and ``VQA_RAD Image Folder/``. Closed questions
  become two-option items: yes/no (A yes, B no), or the two alternatives an "X or Y" question names, in the
  question's order. Open questions, and closed ones with more alternatives or whose answer is neither alternative,
  are open-ended items. Categories: ``question_type``, ``image_organ`` and the source's ``answer_type``.
  ``phrase_type`` ``test_*`` is the test split; the image is the group (it recurs across questions).
* ``nejm``: one folder per case holding one image and one ``.txt``: a vignette, a ``Question:`` line, option lines
  ``A. ...`` (or ``A)``, ``(A)``), and an ``Answer: X`` line; the case folder's name is the item id and the group.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medprobe.errors import InvalidInputError

LETTERS = "ABCDEFGHIJ"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".webp", ".gif"}
VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
YES_NO = {"A": "yes", "B": "no"}
VQA_RAD_CATEGORIES = ("question_type", "image_organ", "answer_type")


@dataclass
class SourceItem:
    """One question as read from its source."""

    item_id: str
    images: list[Path | bytes]  # files, or image bytes embedded in the source (base64 in evaluation TSVs)
    question: str
    options: dict[str, str]  # letter -> text, in order; empty for an open-ended item
    answer: str  # letter; an open-ended item's reference answer
    context: str | None = None
    group_id: str | None = None
    category: str | None = None
    split: str = "test"
    source_path: str | None = None
    categories: dict[str, str] = field(default_factory=dict)  # every category column the source gives


@dataclass
class ReadReport:
    """What a reader skipped and why (counts by reason, with a few examples)."""

    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(example)


def answer_letter(answer: str, options: dict[str, str], where: str) -> str:
    a = str(answer).strip()
    if a.upper() in options:
        return a.upper()
    by_text = [k for k, v in options.items() if v.strip().lower() == a.lower()]
    if len(by_text) == 1:
        return by_text[0]
    if by_text:
        raise InvalidInputError(f"{where}: answer {answer!r} is the text of options {' and '.join(by_text)}; options "
                                "must differ, or give the answer as a letter")  # fmt: skip
    raise InvalidInputError(f"{where}: answer {answer!r} is neither an option letter ({', '.join(options)}) nor one "
                            "option's text")  # fmt: skip


def _options_of(row: dict, where: str) -> dict[str, str]:
    raw = row.get("options")
    if raw not in (None, ""):
        opts = json.loads(raw) if isinstance(raw, str) else raw
        if isinstance(opts, list):
            opts = dict(zip(LETTERS, opts, strict=False))
        if not isinstance(opts, dict):
            raise InvalidInputError(f"{where}: options must be a JSON object {{\"A\": ...}} or list")
    else:
        opts = {k: row[k] for k in LETTERS if row.get(k) not in (None, "") and str(row.get(k)) != "nan"}
    opts = {str(k).strip().upper(): str(v) for k, v in opts.items()}
    if len(opts) == 1:
        raise InvalidInputError(f"{where}: one option only; give at least two (an options object or columns A, B, "
                                "...), or none for an open-ended question")  # fmt: skip
    bad = [k for k in opts if k not in LETTERS]
    if bad:
        raise InvalidInputError(f"{where}: option keys must be letters A-J, got {bad}")
    return opts


_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


def embedded_image(text: str) -> bytes | None:
    """The image bytes of a base64 string (how evaluation TSVs embed images), else None."""
    if len(text) < 64 or "." in text:
        return None  # a path (base64 has no dots), not an image
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(_IMAGE_MAGIC) else None


def _images_of(value: object, base: Path) -> list[Path | bytes]:
    if isinstance(value, list):
        names = [str(v) for v in value]
    else:
        text = str(value or "").strip()
        names = json.loads(text) if text.startswith("[") else [text] if text else []
    out: list[Path | bytes] = []
    for n in names:
        data = embedded_image(n)
        out.append(data if data is not None else (base / n) if not Path(n).is_absolute() else Path(n))
    return out


def _json_rows(path: Path, text: str, *, whole: bool) -> list[Any]:
    """The rows of a .json file (one array) or .jsonl file (one object a line); a malformed one is named by line."""
    if whole:
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise InvalidInputError(f"{path}: not valid JSON ({e}); fix the file or save it as .jsonl") from None
        if not isinstance(rows, list):
            raise InvalidInputError(f"{path}: a .json items file holds one array of item objects")
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise InvalidInputError(f"{path}, line {number}: not valid JSON ({e}); fix that line") from None
    return rows


def _categories_of(row: dict, where: str) -> dict[str, str]:
    """The ``category`` cell and a ``categories`` object (JSON in a CSV cell) as ``{column: value}``."""
    out = {} if row.get("category") in (None, "") else {"category": str(row["category"]).strip()}
    raw = row.get("categories")
    if raw in (None, ""):
        return out
    try:
        extra = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        extra = None
    if not isinstance(extra, dict):
        raise InvalidInputError(f"{where}: 'categories' must be an object of column -> value, e.g. "
                                '{"question_type": "PRES", "organ": "CHEST"}')  # fmt: skip
    return {**out, **{str(k): str(v).strip() for k, v in extra.items() if str(v).strip()}}


def read_table(path: Path) -> Iterator[SourceItem]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        text = path.read_text()
        rows = _json_rows(path, text, whole=suffix == ".json")
    elif suffix in (".csv", ".tsv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    else:
        raise InvalidInputError(f"{path}: items come as .jsonl, .json, .csv or .tsv")
    seen: set[str] = set()
    for i, row in enumerate(rows, start=1):
        where = f"{path.name} row {i}"
        item_id = str(row.get("id", row.get("index", ""))).strip()
        if not item_id:
            raise InvalidInputError(f"{where}: no id (column id or index)")
        if item_id in seen:
            raise InvalidInputError(f"{where}: id {item_id!r} appears twice; ids must be unique within a file")
        seen.add(item_id)
        for col in ("question", "answer"):
            if not str(row.get(col) or "").strip():
                raise InvalidInputError(f"{where}: column {col!r} is empty")
        options = _options_of(row, where)
        images = _images_of(row.get("image", row.get("image_path")), path.parent)
        if not images:
            raise InvalidInputError(f"{where}: column 'image' names no image file")
        split = str(row.get("split") or "test").strip()
        if split not in ("train", "val", "test"):
            raise InvalidInputError(f"{where}: split {split!r} must be train, val or test")
        context = row.get("context", row.get("hint"))
        yield SourceItem(
            item_id=item_id, images=images, question=str(row["question"]).strip(), options=options,
            answer=answer_letter(str(row["answer"]), options, where) if options else open_reference(
                str(row["answer"]), where),
            context=None if context in (None, "") or str(context) == "nan" else str(context),
            group_id=None if row.get("group_id") in (None, "") else str(row["group_id"]),
            category=None if row.get("category") in (None, "") else str(row["category"]), split=split,
            source_path=f"{path.name}:{i}", categories=_categories_of(row, where),
        )  # fmt: skip


_ARTICLES = {"a", "an", "the", "just"}
_NUMBER_WORDS = {"1": "one", "2": "two", "3": "three", "4": "four"}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower().strip("?.!,"))


def _matches(answer: str, alternative: str) -> bool:
    a, alt = _norm(answer), _norm(alternative)
    alt = _NUMBER_WORDS.get(alt, alt)
    return a == alt or a.startswith(alt + " ")


def two_alternatives(question: str, answer: str) -> tuple[str, str] | None:
    """The two alternatives an "X or Y" question names, in its order, when the answer is exactly one of them."""
    q = question.strip().rstrip("?.").strip()
    if q.lower().count(" or ") != 1 or "," in q:
        return None
    i = q.lower().index(" or ")
    left, right = q[:i].split(), q[i + 4 :].split()
    while right and right[0].lower() in _ARTICLES:
        right = right[1:]
    for n in (1, 2, 3):
        if len(left) < n or len(right) < n:
            break
        a, b = " ".join(left[-n:]), " ".join(right[:n])
        hit_a, hit_b = _matches(answer, a), _matches(answer, b)
        if hit_a != hit_b:
            return a, b
    return None


def open_reference(answer: str, where: str) -> str:
    """An open-ended item's reference answer; refused (naming ``where``) when it normalises to nothing."""
    from medprobe.vqa.open_answers import normalise

    text = str(answer).strip()
    if not normalise(text):
        raise InvalidInputError(f"{where}: reference answer {answer!r} normalises to nothing (no word or number); "
                                "fix the answer or leave the item out")  # fmt: skip
    return text


def closed_or_open(question: str, answer: str, where: str) -> tuple[dict[str, str], str]:
    """``(options, answer)`` of a question with a short answer: yes/no as two options (A yes, B no), an "X or Y"
    question as its two alternatives, anything else open-ended (no options, the answer as reference)."""
    if answer.strip().lower() in ("yes", "no"):
        return dict(YES_NO), "A" if answer.strip().lower() == "yes" else "B"
    pair = two_alternatives(question, answer)
    if pair is not None:
        return {"A": pair[0], "B": pair[1]}, "A" if _matches(answer, pair[0]) else "B"
    return {}, open_reference(answer, where)


def read_vqa_rad(source: Path, report: ReadReport) -> Iterator[SourceItem]:
    """VQA-RAD from its folder, or from its published JSON file (the images are in the folder beside it)."""
    json_file = source if source.is_file() else source / VQA_RAD_JSON
    if not json_file.is_file():
        raise InvalidInputError(f"{source}: not VQA-RAD's folder (no {VQA_RAD_JSON!r} in it) nor that file")
    records = json.loads(json_file.read_text())
    images = json_file.parent / VQA_RAD_IMAGES
    for number, r in enumerate(records, start=1):
        where = f"{json_file.name} record {number} (qid {r.get('qid')})"
        answer = str(r.get("answer") or "").strip()
        question = str(r.get("question") or "").strip()
        if not answer or not question or not str(r.get("image_name") or "").strip():
            missing = [k for k, v in (("question", question), ("answer", answer), ("image_name", r.get("image_name")))
                       if not str(v or "").strip()]  # fmt: skip
            raise InvalidInputError(f"{where}: no {', '.join(missing)}; fix or remove the record")
        if str(r.get("answer_type", "")).strip().upper() == "CLOSED":
            options, gold = closed_or_open(question, answer, where)
        else:
            options, gold = {}, open_reference(answer, where)
        phrase = str(r.get("phrase_type", ""))
        yield SourceItem(
            item_id=str(r["qid"]), images=[images / str(r["image_name"])], question=question, options=options,
            answer=gold, group_id=str(r["image_name"]), category=str(r.get("question_type", "")).strip() or None,
            split="test" if phrase.startswith("test") else "train", source_path=f"{VQA_RAD_JSON}:qid={r['qid']}",
            categories={k: str(r[k]).strip() for k in VQA_RAD_CATEGORIES if str(r.get(k) or "").strip()},
        )  # fmt: skip


_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[\).:]\s+(.+?)\s*$")
_ANSWER_LINE = re.compile(r"^\s*(?:correct\s+)?answer\s*[:\-]\s*\(?([A-J])\b", re.IGNORECASE)
_QUESTION_LINE = re.compile(r"^\s*question\s*:\s*(.+)$", re.IGNORECASE)


def parse_case_text(text: str, where: str) -> tuple[str | None, str, dict[str, str], str]:
    """``(context, question, options, answer)`` of one NEJM case text."""
    context_lines: list[str] = []
    question = None
    options: dict[str, str] = {}
    answer = None
    for line in text.splitlines():
        if m := _ANSWER_LINE.match(line):
            answer = m.group(1).upper()
        elif m := _QUESTION_LINE.match(line):
            question = m.group(1).strip()
        elif m := _OPTION_LINE.match(line):  # "A. text": a vignette line never has a letter then . ) or :
            options[m.group(1).upper()] = m.group(2)
        elif line.strip() and not options:
            context_lines.append(line.strip())
    if question is None and context_lines and context_lines[-1].endswith("?"):
        question = context_lines.pop()
    if question is None or len(options) < 2 or answer is None:
        missing = [n for n, v in (("Question:", question), ("options A. ...", len(options) >= 2 or None),
                                  ("Answer: X", answer)) if v is None]  # fmt: skip
        raise InvalidInputError(f"{where}: missing {', '.join(missing)}; see the NEJM layout in the README")
    if answer not in options:
        raise InvalidInputError(f"{where}: answer {answer} is not one of the options {', '.join(options)}")
    context = " ".join(context_lines) or None
    return context, question, options, answer


def read_nejm(folder: Path, report: ReadReport) -> Iterator[SourceItem]:
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        texts = sorted(case.glob("*.txt"))
        images: list[Path | bytes] = sorted(p for p in case.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(texts) != 1 or not images:
            report.skip("case folder without exactly one .txt and at least one image", case.name)
            continue
        context, question, options, answer = parse_case_text(texts[0].read_text(), f"{case.name}/{texts[0].name}")
        yield SourceItem(
            item_id=case.name, images=images, question=question, options=options, answer=answer, context=context,
            group_id=case.name, split="test", source_path=f"{case.name}/{texts[0].name}",
        )  # fmt: skip
