"""Reasoning before the answer: the parser reads `<answer>` tags, "the answer is X", "Answer: X", the last standalone
letter or the option text after the reasoning, records which rule matched, and never guesses; `vqa run --reasoning`
asks for it and keeps plain runs' ids unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medprobe
from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.vqa.parse import parse_answer

SHOWN = [("A", "pleural effusion"), ("B", "pneumothorax"), ("C", "normal")]
TABLE = [
    ("<think>The costophrenic angle is blunted.</think><answer>A</answer>", "A", "answer_tag"),
    ("<think>Could be B... but the lung markings extend to the wall.</think>\n<answer>(C)</answer>", "C", "answer_tag"),
    ("<answer>pneumothorax</answer>", "B", "answer_tag"),
    ("<think>A or B?</think><answer>not sure</answer>", None, "unparsed"),  # tags given, nothing in them: a failure
    ("The pleural line is visible, so the answer is B.", "B", "answer_is"),
    ("Blunted angles and a meniscus. Answer: (A)", "A", "answer_is"),
    ("<think>long reasoning about A and B</think> C", "C", "bare_letter"),
    ("Meniscus sign present, consistent with effusion: A.", "A", "last_letter"),
    ("I would go with (C) here.", "C", "last_letter"),  # "I" is a pronoun, not option I
    ("It could be A, then again it could be B", "B", "last_letter"),  # several letters: the last one
    ("The lungs look normal to me.", "C", "option_text"),
    ("I cannot tell from this image.", None, "unparsed"),
    ("<think>unfinished reasoning that never closes", None, "unparsed"),
]


@pytest.mark.parametrize(("text", "letter", "step"), TABLE)
def test_the_reasoning_parser_table(text: str, letter: str | None, step: str) -> None:
    assert parse_answer(text, SHOWN, reasoning=True) == (letter, step)


def test_plain_mode_never_reads_a_letter_inside_a_sentence() -> None:
    assert parse_answer("A 45-year-old with dyspnoea", SHOWN) == (None, "unparsed")
    assert parse_answer("A 45-year-old with dyspnoea", SHOWN, reasoning=True)[0] is None  # "A" leads a sentence


def _items(tmp_path: Path) -> str:
    rows = []
    for i in range(3):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(path)
        rows.append({"id": f"q{i}", "image": f"img/{i}.png", "question": "Is there an effusion?",
                     "options": {"A": "yes", "B": "no"}, "answer": "A", "split": "test"})  # fmt: skip
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(tmp_path / "items.jsonl")


def test_a_reasoning_run_asks_for_it_and_is_its_own_run(store: FeatureStore, tmp_path: Path) -> None:
    medprobe.vqa.ingest(source=_items(tmp_path), name="toy", store=store)
    args = dict(items="toy", model="tiny-random/llava", mode="generate", n_boot=20, no_progress=True, store=store)
    plain = medprobe.vqa.run(**args)
    thinking = medprobe.vqa.run(**args, reasoning=True, max_new_tokens=12)
    assert thinking.run_id != plain.run_id
    params = json.loads(store.sql("SELECT params FROM runs WHERE run_id = ?", [thinking.run_id]).column(0)[0]
                        .as_py())  # fmt: skip
    assert params["reasoning"] is True and "<answer>" in params["reasoning_prompt"]
    steps = store.sql("SELECT parser_step, generation FROM vqa_predictions WHERE run_id = ?",
                      [thinking.run_id]).to_pylist()  # fmt: skip
    assert len(steps) == 3 and all(s["generation"] is not None for s in steps)
    assert {s["parser_step"] for s in steps} <= {"answer_tag", "answer_is", "bare_letter", "last_letter",
                                                 "option_text", "unparsed"}  # fmt: skip
    with pytest.raises(InvalidInputError, match="--reasoning needs --mode generate"):
        medprobe.vqa.run(items="toy", model="tiny-random/llava", reasoning=True, store=store)


def test_accuracy_breaks_down_by_every_category_column_with_group_cis(store: FeatureStore, tmp_path: Path) -> None:
    rows = []
    for i in range(8):
        path = tmp_path / "img" / f"{i % 4}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 50 * (i % 4), dtype=np.uint8)).save(path)
        rows.append({"id": f"q{i}", "image": f"img/{i % 4}.png", "question": f"Question {i}?",
                     "options": {"A": "yes", "B": "no"}, "answer": "AB"[i % 2], "group_id": f"img{i % 4}",
                     "categories": {"organ": ["CHEST", "HEAD"][i % 2], "question_type": "PRES"}})  # fmt: skip
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    medprobe.vqa.ingest(source=str(tmp_path / "items.jsonl"), name="cats", store=store)
    run = medprobe.vqa.run(items="cats", model="tiny-random/llava", n_boot=200, no_progress=True, store=store)
    by = run.document["by"]
    assert set(by) == {"organ", "question_type"} and set(by["organ"]) == {"CHEST", "HEAD"}
    preds = {r["item_id"]: r["correct"] for r in store.sql(
        "SELECT item_id, correct FROM vqa_predictions WHERE run_id = ?", [run.run_id]).to_pylist()}  # fmt: skip
    chest = [f"q{i}" for i in range(0, 8, 2)]
    entry = by["organ"]["CHEST"]
    assert entry["n"] == 4 and entry["value"] == pytest.approx(np.mean([preds[q] for q in chest]))
    # a bootstrap over images (img0, img2), not items: every replicate is a mean of whole groups, so the CI lies
    # between the groups' own accuracies
    per_group = [np.mean([preds[q] for q in chest if int(q[1:]) % 4 == g]) for g in (0, 2)]
    assert min(per_group) - 1e-12 <= entry["ci_low"] <= entry["ci_high"] <= max(per_group) + 1e-12
    only = medprobe.vqa.run(items="cats", model="tiny-random/llava", n_boot=50, by="organ", no_progress=True,
                            store=store)  # fmt: skip
    assert set(only.document["by"]) == {"organ"}
    with pytest.raises(InvalidInputError, match=r"--by site: .* they carry: organ, question_type"):
        medprobe.vqa.run(items="cats", model="tiny-random/llava", by="site", no_progress=True, store=store)
    # two runs compared per category value: the paired difference on exactly that value's items
    letter = medprobe.vqa.run(items="cats", model="tiny-random/llava", mode="letter", n_boot=50, no_progress=True,
                              store=store)  # fmt: skip
    cmp = medprobe.vqa.compare(run_a=letter.run_id, run_b=run.run_id, n_boot=200, store=store)
    chest = cmp.by["organ"]["CHEST"]
    a = {r["item_id"]: r["correct"] for r in store.sql(
        "SELECT item_id, correct FROM vqa_predictions WHERE run_id = ?", [letter.run_id]).to_pylist()}  # fmt: skip
    ids = [f"q{i}" for i in range(0, 8, 2)]
    assert chest["n_items"] == 4 and chest["diff"] == pytest.approx(np.mean([a[q] for q in ids]) -
                                                                     np.mean([preds[q] for q in ids]))  # fmt: skip
    assert {r.get("column") for r in cmp.rows()} == {None, "organ", "question_type"}
    report = medprobe.vqa.report(run_ids=[run.run_id, letter.run_id], out=str(tmp_path / "rep"), store=store)
    assert {Path(p).name for p in report.paths} >= {"vqa_by_organ.png", "vqa_by_question_type.png"}
