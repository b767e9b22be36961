"""Open-ended items through `vqa run`: per-item scores, metrics by hand, loglik of the reference, resume, refusals;
several images in one prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medprobe
from medprobe.adapters.loading import load_adapter
from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.vqa import runner as run_module
from medprobe.vqa.parse import parse_open, reasoning_of
from medprobe.vqa.prompting import OPEN_INSTRUCTION
from medprobe.vqa.scoring import Scored, VlmScorer

# id, question, reference, organ, group, scripted generation -> (exact match, token F1, token recall) by hand
OPEN = [
    ("o1", "Which lung is affected?", "left lung", "CHEST", "g1", "The left lung.", (True, 1.0, 1.0)),
    ("o2", "Which lobe?", "right upper lobe", "CHEST", "g1", "upper lobe", (False, 0.8, 2 / 3)),
    ("o3", "Size of the mass?", "2 cm", "ABD", "g2", "two cm\nmore text", (True, 1.0, 1.0)),
    ("o4", "Is there a fracture?", "yes", "HEAD", "g3", "Yes, there is.", (False, 0.5, 1.0)),
    ("o5", "Organ shown?", "kidney", "ABD", "g4", "liver", (False, 0.0, 0.0)),
    ("o6", "Is it normal?", "no", "HEAD", "g5", "", (False, 0.0, 0.0)),
]
CLOSED = [("c1", "CHEST", "g1", "A"), ("c2", "ABD", "g6", "B"), ("c3", "HEAD", "g7", "A")]


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


def _mixed_items(tmp_path: Path) -> str:
    rows = []
    for k, (item_id, question, reference, organ, group, _, _) in enumerate(OPEN):
        _png(tmp_path / "img" / f"{group}.png", k)
        rows.append({"id": item_id, "image": f"img/{group}.png", "question": question, "answer": reference,
                     "group_id": group, "categories": {"organ": organ}})  # fmt: skip
    for item_id, organ, group, answer in CLOSED:
        _png(tmp_path / "img" / f"{group}.png", 50)
        rows.append({"id": item_id, "image": f"img/{group}.png", "question": "Is there an effusion?",
                     "options": {"A": "yes", "B": "no"}, "answer": answer, "group_id": group,
                     "categories": {"organ": organ}})  # fmt: skip
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(tmp_path / "items.jsonl")


def test_open_answers_are_scored_per_item_and_summarised_closed_and_open_apart(store: FeatureStore, tmp_path: Path,
                                                                               monkeypatch) -> None:  # fmt: skip
    medprobe.vqa.ingest(source=_mixed_items(tmp_path), name="mixed", store=store)
    scripted = {question: generation for _, question, _, _, _, generation, _ in OPEN}
    asked: list[str] = []

    def fake_generate(self, images, text, max_new_tokens=8, exemplars=()):
        asked.append(text)
        for question, generation in scripted.items():
            if question in text:
                assert OPEN_INSTRUCTION in text and max_new_tokens == run_module.OPEN_ANSWER_TOKENS
                return Scored(generation=generation)
        return Scored(generation="A")  # the multiple-choice items: c1 and c3 right, c2 wrong

    monkeypatch.setattr(VlmScorer, "generate", fake_generate)
    run = medprobe.vqa.run(items="mixed", model="tiny-random/llava", mode="generate", n_boot=300, no_progress=True,
                           store=store)  # fmt: skip
    rows = {r["item_id"]: r for r in store.sql("SELECT * FROM vqa_predictions WHERE run_id = ?",
                                                [run.run_id]).to_pylist()}  # fmt: skip
    for item_id, _, _, _, _, generation, (em, f1, recall) in OPEN:
        r = rows[item_id]
        assert r["generation"] == generation and r["option_order"] == [] and r["predicted"] is None
        assert r["exact_match"] is em and r["correct"] is em
        assert r["token_f1"] == pytest.approx(f1) and r["token_recall"] == pytest.approx(recall)
    assert rows["o3"]["answer_text"] == "two cm" and rows["o6"]["parser_step"] == "unparsed"
    assert rows["o4"]["yes_no_correct"] is True and rows["o6"]["yes_no_correct"] is False
    assert rows["o1"]["yes_no_correct"] is None
    doc = run.document
    assert doc["open"]["n_items"] == 6 and doc["closed"]["n_items"] == 3
    assert doc["open"]["exact_match"]["value"] == pytest.approx(2 / 6)
    assert doc["open"]["token_f1"]["value"] == pytest.approx((1 + 0.8 + 1 + 0.5 + 0 + 0) / 6)
    assert doc["open"]["token_recall"]["value"] == pytest.approx((1 + 2 / 3 + 1 + 1 + 0 + 0) / 6)
    assert doc["open"]["yes_no_accuracy"]["value"] == 0.5 and doc["open"]["yes_no_accuracy"]["n"] == 2
    assert doc["closed"]["accuracy"]["value"] == pytest.approx(2 / 3)
    assert doc["accuracy"]["value"] == pytest.approx((2 + 2) / 9)  # right + exact matches over every item
    assert doc["open"]["parse_failure_rate"] == pytest.approx(1 / 6)
    # the open token recall CI resamples groups: o1 and o2 share g1, so no replicate can hold one without the other
    assert doc["open"]["token_recall"]["n_groups"] == 5
    # per category: together, closed and open apart
    chest = doc["by"]["organ"]["CHEST"]
    assert chest["n"] == 3 and chest["value"] == pytest.approx(2 / 3)  # o1 right, o2 not, c1 right
    assert chest["closed"]["n"] == 1 and chest["open"]["token_recall"]["value"] == pytest.approx((1 + 2 / 3) / 2)
    assert doc["chance"] == pytest.approx(0.5)  # the multiple-choice items only
    assert len(asked) == 9
    report = medprobe.vqa.report(run_ids=[run.run_id], out=str(tmp_path / "rep"), store=store)
    assert {Path(p).name for p in report.paths} >= {"vqa_by_organ.png", "vqa_open_recall_by_organ.png"}
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Open-ended items" in summary and f"| {run.run_id} | 6 |" in summary


def test_loglik_on_an_open_item_is_the_references_log_likelihood(store: FeatureStore, tmp_path: Path) -> None:
    medprobe.vqa.ingest(source=_mixed_items(tmp_path), name="mixed", store=store)
    run = medprobe.vqa.run(items="mixed", model="tiny-random/llava", n_boot=50, no_progress=True, store=store)
    row = store.sql("SELECT * FROM vqa_predictions WHERE run_id = ? AND item_id = 'o1'", [run.run_id]).to_pylist()[0]
    assert row["correct"] is None and row["generation"] is None and len(row["loglik_sum"]) == 1
    # directly: the prompt's tokens, then " left lung", through the model in one forward pass
    scorer = VlmScorer(load_adapter("tiny-random/llava"))
    text = "Question: Which lung is affected?\n" + OPEN_INSTRUCTION
    inputs = scorer.inputs([Image.open(tmp_path / "img" / "g1.png")], text, 1)
    length = inputs["input_ids"].shape[1]
    reference = scorer.tokenizer(" left lung", add_special_tokens=False)["input_ids"]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([reference])], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        logp = scorer.model(**inputs).logits.float().log_softmax(-1)
    direct = float(sum(logp[0, length - 1 + i, t] for i, t in enumerate(reference)))
    assert row["loglik_sum"][0] == pytest.approx(direct, abs=1e-4) and row["n_tokens"] == [len(reference)]
    opened = run.document["open"]
    stored = store.sql("SELECT loglik_sum, n_tokens, loglik_mean FROM vqa_predictions WHERE run_id = ? AND "
                       "item_id LIKE 'o%'", [run.run_id]).to_pylist()  # fmt: skip
    assert opened["perplexity"] == pytest.approx(np.exp(-sum(r["loglik_sum"][0] for r in stored)
                                                        / sum(r["n_tokens"][0] for r in stored)))  # fmt: skip
    assert opened["loglik_per_token"]["value"] == pytest.approx(np.mean([r["loglik_mean"][0] for r in stored]))
    assert run.document["accuracy"]["n"] == 3  # only the multiple-choice items have a verdict


def test_a_killed_open_ended_run_resumes_and_stores_nothing_twice(store: FeatureStore, tmp_path: Path,
                                                                  monkeypatch) -> None:  # fmt: skip
    medprobe.vqa.ingest(source=_mixed_items(tmp_path), name="mixed", store=store)
    monkeypatch.setattr(run_module, "COMMIT_EVERY", 2)
    calls = {"n": 0}
    real = VlmScorer.generate

    def dies_on_the_fifth(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VlmScorer, "generate", dies_on_the_fifth)
    args = dict(items="mixed", model="tiny-random/llava", mode="generate", max_new_tokens=4, n_boot=50,
                no_progress=True, store=store)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        medprobe.vqa.run(**args)
    store.refresh()
    assert store.sql("SELECT count(*) FROM vqa_predictions").column(0)[0].as_py() == 4
    calls["n"] = 100
    again = medprobe.vqa.run(**args)
    assert again.already_done == 4 and again.scored_now == 5 and calls["n"] == 105
    counts = store.sql("SELECT item_id, count(*) AS n FROM raw_vqa_predictions GROUP BY 1").to_pylist()
    assert len(counts) == 9 and all(c["n"] == 1 for c in counts)
    stored = store.sql("SELECT * FROM vqa_predictions WHERE item_id LIKE 'o%'").to_pylist()
    assert all(r["answer_text"] == parse_open(r["generation"])[0] for r in stored)


def test_open_items_refuse_letter_mode_and_answer_type_selects(store: FeatureStore, tmp_path: Path) -> None:
    medprobe.vqa.ingest(source=_mixed_items(tmp_path), name="mixed", store=store)
    with pytest.raises(InvalidInputError, match=r"--mode letter needs options; 6 of the items are open-ended \(e\.g\. "
                                                r"o1\): use --mode generate or loglik, or --answer-type closed"):
        medprobe.vqa.run(items="mixed", model="tiny-random/llava", mode="letter", store=store)
    closed = medprobe.vqa.run(items="mixed", model="tiny-random/llava", mode="letter", answer_type="closed",
                              n_boot=20, no_progress=True, store=store)  # fmt: skip
    assert closed.n_items == 3 and "open" not in closed.document
    with pytest.raises(InvalidInputError, match="--reasoning needs --mode generate"):
        medprobe.vqa.run(items="mixed", model="tiny-random/llava", reasoning=True, store=store)
    with pytest.raises(InvalidInputError, match="is not a vision-language model that answers in text"):
        medprobe.vqa.run(items="mixed", model="tiny-random/timm-vit", mode="generate", reasoning=True, store=store)


OPEN_REASONING = [
    ("<think>the left side is dense</think><answer>left lung</answer>", "left lung", "answer_tag"),
    ("It is dense on the left. The answer is left lung.", "left lung", "answer_is"),
    ("Looking closely...\nFinal answer: pleural effusion", "pleural effusion", "answer_is"),
    ("<answer> </answer>", None, "unparsed"),
    ("I cannot tell.", None, "unparsed"),
]


@pytest.mark.parametrize(("text", "answer", "step"), OPEN_REASONING)
def test_the_open_reasoning_parser_table(text: str, answer: str | None, step: str) -> None:
    assert parse_open(text, reasoning=True) == (answer, step)


def test_plain_open_answers_and_the_stored_reasoning() -> None:
    assert parse_open("Answer: left lung\nbecause ...") == ("left lung", "open_text")
    assert parse_open("   ") == (None, "unparsed")
    assert reasoning_of("<think>dense left</think><answer>B</answer>") == "dense left"
    assert reasoning_of("Dense on the left, so <answer>B</answer>") == "Dense on the left, so"


# --------------------------------------------------------------------------- several images per prompt
def _two_image_items(tmp_path: Path) -> str:
    rows = []
    for i in range(3):
        for side in ("a", "b"):
            _png(tmp_path / "img" / f"{i}{side}.png", 10 * i + (side == "b"))
        rows.append({"id": f"m{i}", "image": [f"img/{i}a.png", f"img/{i}b.png"], "question": "Did it grow?",
                     "options": {"A": "yes", "B": "no"}, "answer": "A", "split": "train" if i == 2 else "test"})
    (tmp_path / "multi.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(tmp_path / "multi.jsonl")


def test_an_item_with_two_images_shows_both_to_a_model_that_takes_several(store: FeatureStore,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    medprobe.vqa.ingest(source=_two_image_items(tmp_path), name="multi", store=store)
    run = medprobe.vqa.run(items="multi", model="tiny-random/qwen2-vl", n_boot=20, no_progress=True, store=store)
    row = store.sql("SELECT * FROM vqa_predictions WHERE run_id = ? AND item_id = 'm0'", [run.run_id]).to_pylist()[0]
    # directly: the processor's own chat template with two image entries, both images, prompt + option in one pass
    scorer = VlmScorer(load_adapter("tiny-random/qwen2-vl"))
    processor = scorer.pre.processor
    images = [Image.open(tmp_path / "img" / n).convert("RGB") for n in ("0a.png", "0b.png")]
    text = "Question: Did it grow?\nA. yes\nB. no\nAnswer with the letter of the correct option."
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def direct(option: str, shown: list) -> float:
        base = processor(images=shown, text=[prompt], return_tensors="pt")
        length = base["input_ids"].shape[1]
        full = processor(images=shown, text=[prompt + option], return_tensors="pt")
        ids = full["input_ids"][0]
        with torch.no_grad():
            logp = scorer.model(**full).logits.float().log_softmax(-1)
        return float(sum(logp[0, i - 1, ids[i]] for i in range(length, len(ids))))

    assert row["loglik_sum"] == pytest.approx([direct("yes", images), direct("no", images)], abs=1e-4)
    # the second image matters: the same question with the first image twice scores otherwise
    assert direct("yes", [images[0], images[0]]) != pytest.approx(row["loglik_sum"][0], abs=1e-6)
    with pytest.raises(InvalidInputError, match=r"takes one image per prompt; this prompt has 2"):
        medprobe.vqa.run(items="multi", model="tiny-random/llava", n_boot=20, no_progress=True, store=store)


def test_exemplars_with_their_images(store: FeatureStore, tmp_path: Path, monkeypatch) -> None:
    medprobe.vqa.ingest(source=_two_image_items(tmp_path), name="multi", store=store)
    seen: list[int] = []
    real = VlmScorer.inputs

    def counting(self, images, text, copies, exemplars=()):
        out = real(self, images, text, copies, exemplars)
        seen.append(int(out["image_grid_thw"].shape[0]))  # images the model is given
        assert "Answer: A" in self.pre.processor.batch_decode(out["input_ids"])[0]  # the exemplar's answer
        return out

    monkeypatch.setattr(VlmScorer, "inputs", counting)
    base = dict(items="multi", model="tiny-random/qwen2-vl", fixed_shots="m2", n_boot=20, no_progress=True,
                store=store)  # fmt: skip
    with_images = medprobe.vqa.run(**base, shots_with_images=True)
    assert seen == [4, 4]  # the exemplar's two images, then the question's two
    seen.clear()
    text_only = medprobe.vqa.run(**base)
    assert seen == [2, 2] and text_only.run_id != with_images.run_id
    with pytest.raises(InvalidInputError, match="--shots-with-images shows the exemplars' images"):
        medprobe.vqa.run(items="multi", model="tiny-random/qwen2-vl", shots_with_images=True, store=store)


def test_reasoning_turns_on_a_chat_templates_own_thinking_switch(store: FeatureStore, tmp_path: Path) -> None:
    saved = tmp_path / "qwen"
    medprobe.models(model="tiny-random/qwen2-vl", save=str(saved))
    template = saved / "chat_template.jinja"
    template.write_text(template.read_text() + "{%- if enable_thinking %}<think>\n{%- endif %}")
    medprobe.vqa.ingest(source=_mixed_items(tmp_path), name="mixed", store=store)
    args = dict(items="mixed", model=str(saved), mode="generate", max_new_tokens=2, n_boot=20, limit=2,
                no_progress=True, store=store)  # fmt: skip
    thinking = medprobe.vqa.run(**args, reasoning=True)
    plain = medprobe.vqa.run(**args)
    params = {r["run_id"]: json.loads(r["params"]) for r in store.sql("SELECT run_id, params FROM runs WHERE run_id "
              "IN (?, ?)", [thinking.run_id, plain.run_id]).to_pylist()}  # fmt: skip
    assert params[thinking.run_id]["thinking_template"] is True
    assert params[thinking.run_id]["prompt_template"].endswith("<think>")
    assert "thinking_template" not in params[plain.run_id] and "<think>" not in params[plain.run_id]["prompt_template"]
