"""Scoring modes equal direct transformers computations; parser, rotations, exemplars, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.adapters.loading import load_adapter
from medprobe.featurestore import FeatureStore
from medprobe.vqa import runner as run_module
from medprobe.vqa.parse import parse_answer
from medprobe.vqa.prompting import Item, choose_exemplars, option_order, question_text, shown_options
from medprobe.vqa.scoring import VlmScorer
from tests.helpers.cli import run_cli

IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
TEXT = "Question: Is there a fracture?\nA. yes\nB. no\nAnswer with the letter of the correct option."


# families whose tokens carry a mask of the images they attend to: their reference is the processor itself, run on
# the prompt + answer text (what it gives there is what generation gives: the answer sees the image)
IMAGE_MASK_FAMILIES = ("idefics", "mllama")


def _prefix(scorer: VlmScorer) -> str:
    """The space the scorer puts before an answer to TEXT."""
    return scorer._prefix_after(scorer.inputs([IMAGE], TEXT, 1)["input_ids"][0])


def _processor_loglik(scorer: VlmScorer, option: str) -> float:
    """One option alone, independently of the scorer's input building: the processor on prompt + option text."""
    base = scorer.inputs([IMAGE], TEXT, 1)
    length = base["input_ids"].shape[1]
    full_text = scorer.prompt(TEXT) + _prefix(scorer) + option
    full = {k: v for k, v in scorer.pre.run_processor([IMAGE], full_text).items()
            if isinstance(v, torch.Tensor) and k not in scorer.pre.drop_keys}  # fmt: skip
    ids = full["input_ids"][0]
    assert torch.equal(ids[:length], base["input_ids"][0])  # the prompt's tokens are the same
    cont = ids[length:].tolist()
    with torch.no_grad():
        logp = scorer.model(**full).logits.float().log_softmax(-1)
    return float(sum(logp[0, length - 1 + i, t] for i, t in enumerate(cont)))


def _direct_loglik(scorer: VlmScorer, option: str) -> float:
    """One option alone: prompt + option ids through the model, no batching, no padding."""
    if scorer.adapter.identity.adapter in IMAGE_MASK_FAMILIES:
        return _processor_loglik(scorer, option)
    inputs = scorer.inputs([IMAGE], TEXT, 1)
    length = inputs["input_ids"].shape[1]
    cont = scorer.tokenizer(_prefix(scorer) + option, add_special_tokens=False)["input_ids"]
    for key, value in list(inputs.items()):  # per-token inputs over the answer text
        if key not in ("input_ids", "attention_mask") and value.shape[:2] == (1, length):
            if key == "token_type_ids" and scorer.adapter.identity.adapter == "paligemma":
                extra = torch.ones((1, len(cont)), dtype=value.dtype)  # the answer is PaliGemma's suffix
            else:
                extra = torch.zeros((1, len(cont), *value.shape[2:]), dtype=value.dtype)
            inputs[key] = torch.cat([value, extra], 1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([cont])], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        logp = scorer.model(**inputs).logits.float().log_softmax(-1)
    return float(sum(logp[0, length - 1 + i, t] for i, t in enumerate(cont)))


VLMS = ["llava", "llava-next", "llava-onevision", "idefics", "idefics2", "idefics3", "smolvlm", "qwen2-vl",
        "qwen2.5-vl", "paligemma", "gemma3", "mllama", "internvl"]  # fmt: skip


@pytest.mark.parametrize("name", VLMS)
def test_loglik_and_letter_equal_a_direct_computation(name: str) -> None:
    scorer = VlmScorer(load_adapter(f"tiny-random/{name}"))
    options = ["yes", "no fracture is seen"]
    scored = scorer.loglik([IMAGE], TEXT, options)
    direct = [_direct_loglik(scorer, o) for o in options]
    np.testing.assert_allclose(scored.loglik_sum, direct, atol=1e-4)
    assert scored.n_tokens[1] > scored.n_tokens[0]
    np.testing.assert_allclose(scored.loglik_mean, np.array(direct) / np.array(scored.n_tokens), atol=1e-4)
    with torch.no_grad():
        logits = scorer.model(**scorer.inputs([IMAGE], TEXT, 1)).logits.float()[0, -1]
    ids = scorer._letter_tokens(_prefix(scorer), ["A", "B"])
    expected = torch.softmax(logits[ids].double(), 0).numpy()
    np.testing.assert_allclose(scorer.letter([IMAGE], TEXT, ["A", "B"]).letter_probs, expected, atol=1e-6)


@pytest.mark.parametrize(("name", "prefix"), [("paligemma", ""), ("llava", " "), ("qwen2-vl", "")])
def test_the_answer_space_is_decided_from_the_tokens_the_model_sees(name: str, prefix: str) -> None:
    scorer = VlmScorer(load_adapter(f"tiny-random/{name}"))
    # PaliGemma's processor appends a newline to the prompt text: its answers start without a space
    assert _prefix(scorer) == prefix


def test_a_vision_encoder_is_refused() -> None:
    with pytest.raises(Exception, match="not a vision-language model"):
        VlmScorer(load_adapter("tiny-random/clip"))


ANSWERS = [  # real-world answer strings -> (letter, step)
    ("B", ("B", "bare_letter")), ("(B)", ("B", "bare_letter")), ("B.", ("B", "bare_letter")),
    ("**B**", ("B", "bare_letter")), ("B) no", ("B", "bare_letter")), ("B no", ("B", "bare_letter")),
    ("The answer is A.", ("A", "answer_is")), ("Answer: (A)", ("A", "answer_is")),
    ("Based on the image, the correct answer is B: no", ("B", "answer_is")), ("answer: b", ("B", "answer_is")),
    ("yes", ("A", "option_text")), ("No, there is no fracture.", ("B", "option_text")),
    ("A 45-year-old man", (None, "unparsed")), ("I am not sure.", (None, "unparsed")),
    ("Both yes and no are possible", (None, "unparsed")), ("C", (None, "unparsed")), ("", (None, "unparsed")),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), ANSWERS)
def test_parser_table(text: str, expected: tuple[str | None, str]) -> None:
    assert parse_answer(text, [("A", "yes"), ("B", "no")]) == expected


def _item(i: int, answer: str = "B", group: str | None = None, n: int = 4) -> Item:
    opts = tuple((letter, f"opt{letter}{i}") for letter in "ABCD"[:n])
    return Item(f"q{i}", (f"img{i}",), f"Question {i}?", opts, answer, group_id=group, split="train")


def test_rotation_maps_letters_both_ways() -> None:
    item = _item(0, answer="C")
    assert option_order(item, 1) == ["B", "C", "D", "A"]
    shown = shown_options(item, 1)
    assert shown[1] == ("B", "optC0")  # the gold option is shown as B under rotation 1
    assert "A. optB0" in question_text(item, 1) and question_text(item, 0).endswith("correct option.")


def test_exemplars_avoid_the_questions_group_and_balance_letters() -> None:
    pool = [_item(i, answer="ABCD"[i % 4], group=f"p{i % 5}") for i in range(40)]
    question = _item(99, group="p3")
    chosen = choose_exemplars(question, pool, 4, seed=7)
    assert len(chosen) == 4 and all(e.group_id != "p3" for e in chosen)
    assert sorted(e.answer for e in chosen) == ["A", "B", "C", "D"]
    assert chosen == choose_exemplars(question, pool, 4, seed=7) != choose_exemplars(question, pool, 4, seed=8)
    sharing_image = Item("x", ("img99",), "q", (("A", "a"), ("B", "b")), "A", split="train")
    assert sharing_image not in choose_exemplars(question, [*pool, sharing_image], 30, seed=0)


def _items_file(tmp_path: Path, n: int = 8) -> Path:
    rows = []
    for i in range(n):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        rows.append({"id": f"q{i}", "image": f"img/{i}.png", "question": f"Is finding {i} present?",
                     "options": {"A": "yes", "B": "no", "C": "maybe"}, "answer": "ABC"[i % 3],
                     "group_id": f"p{i // 2}", "category": "even" if i % 2 == 0 else "odd",
                     "split": "train" if i >= 6 else "test"})  # fmt: skip
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_run_resumes_after_a_kill_without_rescoring(store: FeatureStore, tmp_path: Path, capsys, monkeypatch) -> None:
    path = _items_file(tmp_path)
    assert run_cli(capsys, "vqa", "ingest", str(path), "--name", "toy", "--store", store.url)[0] == 0
    monkeypatch.setattr(run_module, "COMMIT_EVERY", 2)
    calls = {"n": 0}
    real = VlmScorer.loglik

    def dies_on_the_fifth(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # a kill in the middle of the run
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VlmScorer, "loglik", dies_on_the_fifth)
    args = ["vqa", "run", "--items", "toy", "-m", "tiny-random/llava", "--circular", "-f", "json", "--store",
            store.url, "--n-boot", "100"]  # fmt: skip
    code, _, _ = run_cli(capsys, *args)
    assert code != 0
    store.refresh()
    kept = store.sql("SELECT count(*) FROM vqa_predictions").column(0)[0].as_py()
    assert kept == 4  # two committed fragments of two
    calls["n"] = 100  # no more kills
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["already_done"] == 4 and doc["scored_now"] == 6 * 3 - 4 and calls["n"] == 100 + 14
    assert doc["n_items"] == 6 and set(doc) >= {"run_id", "accuracy", "circular_accuracy", "mean_over_rotations"}
    rows = store.sql("SELECT item_id, rotation, count(*) AS n FROM raw_vqa_predictions GROUP BY 1, 2").to_pylist()
    assert len(rows) == 18 and all(r["n"] == 1 for r in rows)  # nothing scored twice
    preds = store.sql("SELECT * FROM vqa_predictions").to_pylist()
    by_item: dict[str, list[bool]] = {}
    for r in preds:
        by_item.setdefault(r["item_id"], []).append(r["correct"])
        shown_gold = r["option_order"].index({"q0": "A", "q1": "B", "q2": "C", "q3": "A", "q4": "B",
                                              "q5": "C"}[r["item_id"]])  # fmt: skip
        assert r["correct"] == (int(np.argmax(r["loglik_sum"])) == shown_gold)
    assert doc["circular_accuracy"]["value"] == pytest.approx(np.mean([all(v) for v in by_item.values()]))
    assert doc["accuracy"]["n_groups"] == 3 and set(doc["per_category"]) == {"even", "odd"}


def test_generate_and_letter_modes_with_shots(store: FeatureStore, tmp_path: Path, capsys) -> None:
    path = _items_file(tmp_path)
    assert run_cli(capsys, "vqa", "ingest", str(path), "--name", "toy", "--store", store.url)[0] == 0
    for mode in ("generate", "letter"):
        code, out, err = run_cli(capsys, "vqa", "run", "--items", "toy", "-m", "tiny-random/qwen2-vl", "--mode", mode,
                                 "--shots", "1", "-f", "json", "--store", store.url, "--n-boot", "50")  # fmt: skip
        assert code == 0, err
        doc = json.loads(out)
        assert doc["n_items"] == 6 and doc["mode"] == mode
        if mode == "letter":
            assert set(doc["calibration"]) == {"brier", "ece", "bins"}
        else:
            steps = store.sql("SELECT DISTINCT parser_step FROM vqa_predictions WHERE run_id = ?",
                              [doc["run_id"]]).column(0).to_pylist()  # fmt: skip
            assert set(steps) <= {"bare_letter", "answer_is", "option_text", "unparsed"}
    code, _, err = run_cli(capsys, "vqa", "run", "--items", "nope", "-m", "tiny-random/llava", "--store", store.url)
    assert code != 0 and "no VQA item set 'nope'" in err and "toy" in err


def test_compare_and_report_two_runs(store: FeatureStore, tmp_path: Path, capsys) -> None:
    path = _items_file(tmp_path)
    assert run_cli(capsys, "vqa", "ingest", str(path), "--name", "toy", "--store", store.url)[0] == 0
    runs = []
    for model, mode in (("tiny-random/llava", "loglik"), ("tiny-random/idefics2", "letter")):
        code, out, err = run_cli(capsys, "vqa", "run", "--items", "toy", "-m", model, "--mode", mode, "-f", "json",
                                 "--store", store.url, "--n-boot", "50")  # fmt: skip
        assert code == 0, err
        runs.append(json.loads(out))
    code, out, err = run_cli(capsys, "vqa", "compare", runs[0]["run_id"], runs[1]["run_id"], "-f", "json",
                             "--store", store.url)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n_items"] == 6 and doc["diff"] == pytest.approx(runs[0]["accuracy"]["value"] -
                                                                runs[1]["accuracy"]["value"])  # fmt: skip
    assert doc["only_a_right"] - doc["only_b_right"] == round(doc["diff"] * 6)
    assert 0 <= doc["p_mcnemar"] <= 1 and doc["ci_low"] <= doc["diff"] <= doc["ci_high"]
    code, out, err = run_cli(capsys, "vqa", "report", runs[0]["run_id"], runs[1]["run_id"], "--out",
                             str(tmp_path / "rep"), "--store", store.url)  # fmt: skip
    assert code == 0, err
    for name in ("vqa_categories.png", "vqa_letters.png", "vqa_reliability.png", "summary.md"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    assert runs[0]["run_id"] in (tmp_path / "rep" / "summary.md").read_text()


def test_save_activations_feeds_a_probe_sweep(store: FeatureStore, tmp_path: Path, capsys) -> None:
    rows = []
    for i in range(24):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 40 + 8 * i, dtype=np.uint8)).save(path)
        rows.append({"id": f"q{i:02d}", "image": f"img/{i}.png", "question": "Is it bright?",
                     "options": {"A": "yes", "B": "no"}, "answer": "A" if i >= 12 else "B", "group_id": f"p{i}",
                     "split": "test" if i % 3 == 0 else "train"})  # fmt: skip
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    source = str(tmp_path / "items.jsonl")
    assert run_cli(capsys, "vqa", "ingest", source, "--name", "toy", "--store", store.url)[0] == 0
    code, out, err = run_cli(capsys, "vqa", "run", "--items", "toy", "-m", "tiny-random/llava", "--save-activations",
                             "-f", "json", "--store", store.url, "--n-boot", "50")  # fmt: skip
    assert code == 0, err
    saved = json.loads(out)["activations"]
    fs = saved["feature_set_id"]
    from medprobe.vqa.activations import item_key
    from medprobe.vqa.prompting import question_text

    assert store.sql("SELECT count(DISTINCT image_hash) FROM activations WHERE feature_set_id = ?",
                     [fs]).column(0)[0].as_py() == 24  # fmt: skip
    kinds = store.sql("SELECT DISTINCT row_kind FROM dataset_images WHERE dataset = ?", [saved["dataset"]])
    assert kinds.column(0).to_pylist() == ["vqa_item"]  # the rows say they are VQA items, not images
    code, _, err = run_cli(capsys, "extract", "-d", saved["dataset"], "-m", "tiny-random/clip", "--store", store.url)
    assert code == 3 and "holds VQA items, not images" in err
    # the stored state is the model's hidden state at the last prompt token (layer 0 = hidden_states[1])
    scorer = VlmScorer(load_adapter("tiny-random/llava"))
    item = Item.from_row(store.sql("SELECT * FROM vqa_items WHERE item_id = 'q05'").to_pylist()[0])
    inputs = scorer.inputs([Image.open(tmp_path / "img" / "5.png").convert("RGB")], question_text(item, 0), 1)
    with torch.no_grad():
        hidden = scorer.model(**inputs, output_hidden_states=True).hidden_states
    stored = store.read(fs, 0, [item_key("toy", "q05")])[0]
    np.testing.assert_allclose(stored, hidden[1][0, -1].float().numpy(), atol=1e-4)
    fast = ["--cv", "2", "--c-grid", "0.1,1", "--n-boot", "50"]
    code, out, err = run_cli(capsys, "sweep", "-d", saved["dataset"], "-t", "answer", "--feature-set", fs, *fast,
                             "-f", "json", "--store", store.url)  # fmt: skip
    assert code == 0, err
    assert len(json.loads(out)["probes"]) == scorer.adapter.identity.n_layers
