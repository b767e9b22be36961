"""VQA items: the table, VQA-RAD and NEJM readers, and ingest (content-addressed, idempotent, failures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.vqa.item_ingest import ingest_items
from medprobe.vqa.items import ReadReport, parse_case_text, two_alternatives
from medprobe.vqa.sources import read_items
from tests.helpers.cli import run_cli


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
    return path


def test_tsv_with_option_columns_and_jsonl_with_an_options_object(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "a.png", 0)
    tsv = tmp_path / "items.tsv"
    tsv.write_text("index\timage\tquestion\thint\tA\tB\tC\tanswer\tcategory\n"
                   "1\timg/a.png\tWhich organ?\tA 60-year-old man.\tliver\tspleen\tkidney\tB\tanatomy\n")  # fmt: skip
    (item,) = read_items(tsv, "table", ReadReport())
    assert item.options == {"A": "liver", "B": "spleen", "C": "kidney"} and item.answer == "B"
    assert item.context == "A 60-year-old man." and item.images == [tmp_path / "img" / "a.png"]
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(json.dumps({"id": "q1", "image": ["img/a.png"], "question": "Fracture?",
                                 "options": {"A": "yes", "B": "no"}, "answer": "no", "split": "train"}) + "\n")
    (item,) = read_items(jsonl, "table", ReadReport())
    assert item.answer == "B" and item.split == "train"  # an answer given as the option's text


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "1", "image": "a.png", "question": "q", "options": {"A": "x"}, "answer": "A"}, "one option only"),
        ({"id": "1", "image": "a.png", "question": "q", "answer": "The."}, "normalises to nothing"),
        ({"id": "1", "image": "a.png", "question": "q", "answer": " "}, "column 'answer' is empty"),
        ({"id": "1", "image": "a.png", "question": "q", "options": {"A": "x", "B": "y"}, "answer": "C"},
         "neither an option letter"),
        ({"id": "1", "image": "a.png", "question": "q", "options": {"A": "Yes", "B": "yes "}, "answer": "yes"},
         "is the text of options A and B; options must differ"),
        ({"id": "1", "image": "", "question": "q", "options": {"A": "x", "B": "y"}, "answer": "A"}, "names no image"),
        ({"id": "1", "image": "a.png", "question": "q", "options": {"A": "x", "B": "y"}, "answer": "A",
          "split": "dev"}, "split 'dev'"),
    ],
)
def test_bad_rows_name_the_row(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl row 1") as e:
        list(read_items(path, "table", ReadReport()))
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("question", "answer", "expected"),
    [
        ("Is this an MRI or a CT scan?", "MRI", ("MRI", "CT")),
        ("Is the lesion on the left or right side of the brain?", "Left", ("left", "right")),
        ("Is there hypoinflation or hyperinflation of the lung", "Hyperinflation", ("hypoinflation", "hyperinflation")),
        ("Are there multiple or just 1 metastatic focus?", "one", ("multiple", "1")),
        ("Is the gastric bubble shown on the left or right side of the patient?", "Right side", ("left", "right")),
        ("Are pleural opacities located on the left, right, or both sides of the lung?", "Both", None),
        ("Is the abnormality hyper dense or hypo dense?", "Hypodense", None),
    ],
)
def test_two_alternatives(question: str, answer: str, expected: tuple[str, str] | None) -> None:
    assert two_alternatives(question, answer) == expected


def test_nejm_case_text() -> None:
    text = ("A 45-year-old woman presents with a rash on her trunk.\nQuestion: What is the diagnosis?\n"
            "A. Psoriasis\nB) Lichen planus\n(C) Tinea corporis\nD. Secondary syphilis\nE. Pityriasis rosea\n"
            "Answer: D\n")  # fmt: skip
    context, question, options, answer = parse_case_text(text, "case1/case.txt")
    assert context == "A 45-year-old woman presents with a rash on her trunk."
    assert question == "What is the diagnosis?" and list(options) == list("ABCDE") and answer == "D"
    with pytest.raises(InvalidInputError, match=r"case1/case\.txt: missing Answer: X"):
        parse_case_text(text.replace("Answer: D\n", ""), "case1/case.txt")


def test_ingest_is_content_addressed_idempotent_and_records_failures(store: FeatureStore, tmp_path: Path,
                                                                       capsys) -> None:  # fmt: skip
    for i, case in enumerate(["c1", "c2", "c3"]):
        folder = tmp_path / "nejm" / case
        _png(folder / "image.png", 0 if case != "c2" else 1)  # c1 and c3 share the same image bytes
        (folder / "case.txt").write_text(f"Vignette {i}.\nQuestion: Diagnosis?\nA. x\nB. y\nAnswer: {'AB'[i % 2]}\n")
    (tmp_path / "nejm" / "c3" / "image.png").write_bytes((tmp_path / "nejm" / "c1" / "image.png").read_bytes())
    bad = tmp_path / "nejm" / "c4"
    bad.mkdir()
    (bad / "scan.png").write_bytes(b"not a png")
    (bad / "case.txt").write_text("Question: Q?\nA. x\nB. y\nAnswer: A\n")
    code, out, err = run_cli(capsys, "vqa", "ingest", str(tmp_path / "nejm"), "--name", "nejm", "-f", "json",
                             "--store", store.url)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["layout"] == "nejm" and doc["items_new"] == 3 and doc["images_new"] == 2 and doc["failures"] == 1
    fails = store.sql("SELECT stage, path, reason FROM failures").to_pylist()
    assert fails[0]["stage"] == "vqa-ingest" and fails[0]["path"].endswith("c4/scan.png")
    again = json.loads(run_cli(capsys, "vqa", "ingest", str(tmp_path / "nejm"), "--name", "nejm", "-f", "json",
                               "--store", store.url)[1])  # fmt: skip
    assert again["items_new"] == 0 and again["items_unchanged"] == 3 and again["images_new"] == 0


def test_vqa_rad_every_question(store: FeatureStore, shared_dir: Path) -> None:
    source = shared_dir / "data" / "vqa-rad"
    if not source.is_dir():
        pytest.skip("../shared/data/vqa-rad is absent")
    raw = json.loads((source / "VQA_RAD Dataset Public.json").read_text())
    raw_test = [r for r in raw if str(r["phrase_type"]).startswith("test")]
    summary = ingest_items(store, source, "vqa-rad")
    assert summary.by_split == {"train": len(raw) - len(raw_test), "test": len(raw_test)} == {"train": 1797,
                                                                                            "test": 451}  # fmt: skip
    assert summary.skipped == {}
    items = store.sql("SELECT * FROM vqa_items WHERE split = 'test'").to_pylist()
    closed = [r for r in items if json.loads(r["options"])]
    opened = [r for r in items if not json.loads(r["options"])]
    # 272 closed test questions: 270 as two options, 2 without two named alternatives kept open-ended
    assert len(closed) == 270 and all(len(json.loads(r["options"])) == 2 for r in closed)
    assert sum(str(r["answer_type"]).strip().upper() == "OPEN" for r in raw_test) == 179 and len(opened) == 181
    by_qid = {str(r["qid"]): r for r in raw_test}
    assert all(r["answer"] == str(by_qid[r["item_id"]]["answer"]).strip() for r in opened)  # the reference text
    assert {json.loads(r["categories"])["answer_type"] for r in opened} == {"OPEN", "CLOSED"}
    yes_no = [r for r in items if json.loads(r["options"]) == {"A": "yes", "B": "no"}]
    assert len(yes_no) == 251
    # the question type and the organ come along as category columns (vqa run --by)
    organs = {json.loads(r["categories"])["image_organ"] for r in items}
    assert organs == {"HEAD", "CHEST", "ABD"} and all("question_type" in json.loads(r["categories"]) for r in items)
    # the published JSON file itself (not its folder) reads the same items, with or without --layout
    for layout in ("vqa-rad", None):
        again = ingest_items(store, source / "VQA_RAD Dataset Public.json", "vqa-rad", layout)
        assert again.by_split == {"train": 1797, "test": 451} and again.items_new == 0, layout


def test_a_tsv_with_base64_images_keeps_them_in_the_store(store: FeatureStore, tmp_path: Path, capsys) -> None:
    import base64
    import io

    rows = ["index\timage\tquestion\tA\tB\tanswer\tcategory"]
    for i in range(4):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, "PNG")
        rows.append(f"{i}\t{base64.b64encode(buf.getvalue()).decode()}\tIs it normal?\tyes\tno\t{'AB'[i % 2]}\tx")
    rows.append("9\tbm90IGFuIGltYWdlIGF0IGFsbCwganVzdCBzb21lIHRleHQgdGhhdCBpcyBsb25nIGVub3VnaA==\tQ?\tyes\tno\tA\tx")
    (tmp_path / "mmbench.tsv").write_text("\n".join(rows) + "\n")
    code, out, err = run_cli(capsys, "vqa", "ingest", str(tmp_path / "mmbench.tsv"), "--name", "tsv", "-f", "json",
                             "--store", store.url)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["items_new"] == 4 and doc["images_new"] == 4 and doc["failures"] == 1  # row 9: base64 of no image
    uris = store.sql("SELECT uri, in_store FROM images").to_pylist()
    assert all(r["in_store"] and r["uri"].startswith("store:blobs/images/") for r in uris)
    code, out, err = run_cli(capsys, "vqa", "run", "--items", "tsv", "-m", "tiny-random/llava", "-f", "json",
                             "--n-boot", "20", "--store", store.url)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n_items"] == 4
