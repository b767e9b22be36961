"""The field's published medical VQA layouts, each read from its released files into :class:`SourceItem`.

* ``slake``: SLAKE 1.0's folder (``train.json``, ``validation.json`` or ``validate.json``, ``test.json`` and
  ``imgs/<img_name>``); the English subset (``q_lang`` ``en``; other languages are skipped and counted). Closed
  questions become two-option items where they are yes/no or name two alternatives, the rest are open-ended.
  Categories: ``answer_type``, ``content_type``, ``modality``, ``location``. The image is the group.
* ``pathvqa``: PathVQA as released (``qas/<split>/<split>_qa.pkl``, lists of ``{image, question, answer}``, with
  ``images/<split>/<image>.jpg``; the pickles are read by an unpickler that builds nothing but lists, dicts and
  strings) or its Parquet export (``<split>-*.parquet`` files with an ``image`` struct of bytes, ``question``,
  ``answer``). Yes/no questions are two-option items, the rest open-ended; category ``answer_type`` (yes/no, open).
* ``pmc-vqa``: one PMC-VQA CSV (``train.csv``, ``test.csv``, ``test_clean.csv``, ...): ``Figure_path``,
  ``Question``, ``Choice A``..``Choice D`` (their ``A:`` prefixes dropped), ``Answer_label``; images in ``images/``
  or ``figures/`` beside the CSV. The split is the file's (train or test); the figure is the group.
* ``omnimedvqa``: OmniMedVQA's folder (``QA_information/<access>/<sub-dataset>.json``, images relative to the
  folder): ``option_A``..``option_D``, ``gt_answer`` (an option's text); categories ``question_type``,
  ``modality_type`` (or the ``modality`` key some entries use), ``dataset`` and ``access``. All test split.
* ``vqa-med``: ImageCLEF VQA-Med ``qa_pairs`` text files, one ``image|question|answer`` (or
  ``image|category|question|answer``) a line, or a folder of them (the ``C<n>_<Category>_<split>.txt`` files of
  ``QAPairsByCategory`` when present); images ``<image>.jpg`` in a folder beside the file whose name contains
  "images"; category from the file name or the line; open-ended (yes/no answers become two-option items).

Every item's id says where it came from (a file and row where the source has no id). A record without a question,
answer or image is refused naming its file and row.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medprobe.errors import InvalidInputError
from medprobe.vqa.items import LETTERS, YES_NO, ReadReport, SourceItem, answer_letter, closed_or_open, open_reference

NEW_LAYOUTS = ("slake", "pathvqa", "pmc-vqa", "omnimedvqa", "vqa-med")
SLAKE_FILES = {"train.json": "train", "validation.json": "val", "validate.json": "val", "test.json": "test"}
SLAKE_CATEGORIES = ("answer_type", "content_type", "modality", "location")
PMC_COLUMNS = ("Figure_path", "Question", "Choice A", "Choice B", "Answer_label")


def _split_of(name: str) -> str:
    lowered = name.lower()
    if "train" in lowered:
        return "train"
    if "val" in lowered:
        return "val"
    return "test"


def _required(record: dict, keys: tuple[str, ...], where: str) -> dict[str, str]:
    """The named fields as stripped text; a missing or empty one is refused naming ``where``."""
    values = {k: str(record.get(k) if record.get(k) is not None else "").strip() for k in keys}
    missing = [k for k, v in values.items() if not v or v.lower() == "nan"]
    if missing:
        raise InvalidInputError(f"{where}: no {', '.join(missing)}; fix or remove the record")
    return values


def _yes_no_or_open(answer: str, where: str) -> tuple[dict[str, str], str]:
    """A yes/no answer as two options (A yes, B no); any other answer open-ended (its text the reference)."""
    if answer.strip().lower() in ("yes", "no"):
        return dict(YES_NO), "A" if answer.strip().lower() == "yes" else "B"
    return {}, open_reference(answer, where)


def detect_new_layout(source: Path) -> str | None:
    """One of :data:`NEW_LAYOUTS` when ``source`` looks like it, else None."""
    if source.is_file():
        if source.suffix.lower() == ".txt":
            return "vqa-med"
        if source.suffix.lower() == ".csv":
            with open(source, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            return "pmc-vqa" if set(PMC_COLUMNS) <= {h.strip() for h in header} else None
        return None
    if (source / "QA_information").is_dir():
        return "omnimedvqa"
    if (source / "imgs").is_dir() and any((source / name).is_file() for name in SLAKE_FILES):
        return "slake"
    if (source / "qas").is_dir() or any(source.glob("**/*.parquet")):
        return "pathvqa"
    if _vqa_med_files(source):
        return "vqa-med"
    return None


def read_new_layout(source: Path, layout: str, report: ReadReport) -> Iterator[SourceItem]:
    """The items of ``source`` in one of :data:`NEW_LAYOUTS`."""
    readers = {"slake": _read_slake, "pathvqa": _read_pathvqa, "pmc-vqa": _read_pmc_vqa,
               "omnimedvqa": _read_omnimedvqa, "vqa-med": _read_vqa_med}  # fmt: skip
    yield from readers[layout](source, report)


# --------------------------------------------------------------------------- SLAKE
def _read_slake(root: Path, report: ReadReport) -> Iterator[SourceItem]:
    files = [(root / name, split) for name, split in SLAKE_FILES.items() if (root / name).is_file()]
    if not files:
        raise InvalidInputError(f"{root}: not SLAKE's folder (no {', '.join(SLAKE_FILES)})")
    for path, split in files:
        records = json.loads(path.read_text(encoding="utf-8"))
        for number, r in enumerate(records, start=1):
            where = f"{path.name} record {number} (qid {r.get('qid')})"
            if str(r.get("q_lang", "en")).strip().lower() != "en":
                report.skip(f"not English (q_lang {r.get('q_lang')})", str(r.get("qid")))
                continue
            v = _required(r, ("qid", "img_name", "question", "answer"), where)
            if str(r.get("answer_type", "")).strip().upper() == "CLOSED":
                options, answer = closed_or_open(v["question"], v["answer"], where)
            else:
                options, answer = {}, open_reference(v["answer"], where)
            yield SourceItem(
                item_id=v["qid"], images=[root / "imgs" / v["img_name"]], question=v["question"], options=options,
                answer=answer, group_id=v["img_name"], split=split, source_path=f"{path.name}:qid={v['qid']}",
                categories={k: str(r[k]).strip() for k in SLAKE_CATEGORIES if str(r.get(k) or "").strip()},
            )  # fmt: skip


# --------------------------------------------------------------------------- PathVQA
class _PlainUnpickler(pickle.Unpickler):
    """Builds lists, dicts, strings and numbers only: a pickle naming any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise InvalidInputError(f"the pickle names {module}.{name}; PathVQA's qa files hold plain lists of dicts")


def _pathvqa_item(r: dict, split: str, index: int, images: list[Path | bytes], where: str,
                  image_name: str) -> SourceItem:  # fmt: skip
    v = _required(r, ("question", "answer"), where)
    options, answer = _yes_no_or_open(v["answer"], where)
    return SourceItem(
        item_id=f"{split}:{index}", images=images, question=v["question"], options=options, answer=answer,
        group_id=image_name, split=split, source_path=where,
        categories={"answer_type": "yes/no" if options else "open"},
    )  # fmt: skip


def _read_pathvqa(root: Path, report: ReadReport) -> Iterator[SourceItem]:
    pickles = sorted(root.glob("qas/**/*_qa.pkl"))
    if pickles:
        for path in pickles:
            split = _split_of(path.stem)
            with open(path, "rb") as f:
                records = _PlainUnpickler(f).load()
            if not isinstance(records, list):
                raise InvalidInputError(f"{path}: expected a list of {{image, question, answer}} records")
            folder = root / "images" / path.stem.replace("_qa", "")
            for index, r in enumerate(records):
                where = f"{path.name} record {index + 1}"
                image = _required(r, ("image",), where)["image"]
                name = image if Path(image).suffix else f"{image}.jpg"
                yield _pathvqa_item(r, split, index, [folder / name], where, image)
        return
    shards = sorted(root.glob("**/*.parquet"))
    if not shards:
        raise InvalidInputError(f"{root}: not PathVQA (no qas/<split>/<split>_qa.pkl and no .parquet files)")
    import pyarrow.parquet as pq

    counters: dict[str, int] = {}
    for path in shards:
        split = _split_of(path.name)
        table = pq.read_table(path)
        missing = {"image", "question", "answer"} - set(table.column_names)
        if missing:
            raise InvalidInputError(f"{path}: no column {', '.join(sorted(missing))} (PathVQA's Parquet export)")
        for row_number, r in enumerate(table.to_pylist(), start=1):
            where = f"{path.name} row {row_number}"
            cell = r["image"]
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if not data:
                raise InvalidInputError(f"{where}: no image bytes; fix or remove the row")
            index = counters.get(split, 0)
            counters[split] = index + 1
            name = str(cell.get("path") or f"{split}:{index}") if isinstance(cell, dict) else f"{split}:{index}"
            yield _pathvqa_item(r, split, index, [bytes(data)], where, name)


# --------------------------------------------------------------------------- PMC-VQA
_CHOICE_PREFIX = re.compile(r"^\s*[A-J]\s*[:.)]\s*")


def _read_pmc_vqa(path: Path, report: ReadReport) -> Iterator[SourceItem]:
    if not path.is_file():
        raise InvalidInputError(f"{path}: give PMC-VQA's CSV file (train.csv, test.csv or test_clean.csv)")
    folder = next((path.parent / n for n in ("images", "figures") if (path.parent / n).is_dir()), path.parent)
    split = _split_of(path.stem)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    for number, row in enumerate(rows, start=1):
        where = f"{path.name} row {number + 1}"  # the header is row 1
        row = {str(k).strip(): v for k, v in row.items() if k is not None}
        v = _required(row, ("Figure_path", "Question", "Answer_label"), where)
        options = {}
        for letter in LETTERS:
            text = str(row.get(f"Choice {letter}") or "").strip()
            if text and text.lower() != "nan":
                options[letter] = _CHOICE_PREFIX.sub("", text).strip()
        if len(options) < 2:
            raise InvalidInputError(f"{where}: fewer than two choices (Choice A, Choice B, ...)")
        yield SourceItem(
            item_id=f"{path.stem}:{number}", images=[folder / v["Figure_path"]], question=v["Question"],
            options=options, answer=answer_letter(v["Answer_label"].strip(" :"), options, where),
            group_id=v["Figure_path"], split=split, source_path=f"{path.name}:{number + 1}",
        )  # fmt: skip


# --------------------------------------------------------------------------- OmniMedVQA
def _read_omnimedvqa(root: Path, report: ReadReport) -> Iterator[SourceItem]:
    files = sorted((root / "QA_information").glob("*/*.json")) or sorted((root / "QA_information").glob("*.json"))
    if not files:
        raise InvalidInputError(f"{root}: not OmniMedVQA (no QA_information/<access>/<dataset>.json)")
    seen: set[str] = set()
    for path in files:
        records = json.loads(path.read_text(encoding="utf-8"))
        access = path.parent.name if path.parent.name != "QA_information" else None
        for number, r in enumerate(records, start=1):
            where = f"{path.parent.name}/{path.name} record {number}"
            v = _required(r, ("question", "gt_answer", "image_path"), where)
            options = {letter: str(r[f"option_{letter}"]).strip() for letter in LETTERS
                       if str(r.get(f"option_{letter}") or "").strip()}  # fmt: skip
            if len(options) < 2:
                raise InvalidInputError(f"{where}: fewer than two options (option_A, option_B, ...)")
            item_id = str(r.get("question_id") or f"{path.stem}:{number}")
            if item_id in seen:
                item_id = f"{path.stem}:{item_id}"
            seen.add(item_id)
            categories = {"question_type": r.get("question_type"),
                          "modality_type": r.get("modality_type") or r.get("modality"),
                          "dataset": r.get("dataset") or path.stem, "access": access}  # fmt: skip
            yield SourceItem(
                item_id=item_id, images=[root / v["image_path"]], question=v["question"], options=options,
                answer=answer_letter(v["gt_answer"], options, where), group_id=v["image_path"], split="test",
                source_path=f"{path.parent.name}/{path.name}:{number}",
                categories={k: str(c).strip() for k, c in categories.items() if c and str(c).strip()},
            )  # fmt: skip


# --------------------------------------------------------------------------- VQA-Med
_CATEGORY_FILE = re.compile(r"^C\d+_(.+?)_(?:train|training|val|valid|validation|test)", re.IGNORECASE)


def _vqa_med_files(folder: Path) -> list[Path]:
    by_category = sorted(p for p in folder.glob("*.txt") if _CATEGORY_FILE.match(p.name))
    if by_category:
        return by_category
    out = []
    for p in sorted(folder.glob("*.txt")):
        with open(p, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        if first.count("|") >= 2:
            out.append(p)
    return out


def _image_folders(txt: Path) -> list[Path]:
    near = [txt.parent, txt.parent.parent]
    return [d for base in near if base.is_dir() for d in sorted(base.iterdir())
            if d.is_dir() and "image" in d.name.lower()]  # fmt: skip


def _read_vqa_med(source: Path, report: ReadReport) -> Iterator[SourceItem]:
    files = [source] if source.is_file() else _vqa_med_files(source)
    if not files:
        raise InvalidInputError(f"{source}: no VQA-Med qa_pairs .txt files (image|question|answer lines)")
    for path in files:
        folders = _image_folders(path)
        if not folders:
            raise InvalidInputError(f"{path}: no images folder beside it (a folder whose name contains 'images')")
        m = _CATEGORY_FILE.match(path.name)
        split = _split_of(path.stem)
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(io.StringIO(text), start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            fields = [f.strip() for f in line.rstrip("\n").split("|")]
            if len(fields) == 3:
                image, question, answer = fields
                category = m.group(1) if m else None
            elif len(fields) == 4:
                image, category, question, answer = fields
            else:
                raise InvalidInputError(f"{where}: expected image|question|answer (or image|category|question|answer), "
                                        f"got {len(fields)} fields")  # fmt: skip
            v = _required({"image": image, "question": question, "answer": answer}, ("image", "question", "answer"),
                          where)  # fmt: skip
            name = v["image"] if Path(v["image"]).suffix else f"{v['image']}.jpg"
            found = next((d / name for d in folders if (d / name).is_file()), folders[0] / name)
            options, gold = _yes_no_or_open(v["answer"], where)
            yield SourceItem(
                item_id=f"{path.stem}:{number}", images=[found], question=v["question"], options=options, answer=gold,
                group_id=v["image"], split=split, source_path=f"{path.name}:{number}",
                categories={"category": category} if category else {},
            )  # fmt: skip
