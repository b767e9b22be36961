"""`vqa run` never resumes answers to other questions, and never scores an image whose file changed on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

import medprobe
from medprobe.errors import EXIT_STORE
from medprobe.featurestore import FeatureStore
from tests.helpers.cli import run_cli


def _items(tmp_path: Path, question: str) -> str:
    rows = []
    for i in range(4):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            Image.fromarray(np.full((32, 32, 3), 30 + 40 * i, dtype=np.uint8)).save(path)
        rows.append({"id": f"q{i}", "image": f"img/{i}.png", "question": question, "options": {"A": "yes", "B": "no"},
                     "answer": "A", "split": "test"})  # fmt: skip
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(tmp_path / "items.jsonl")


def test_a_re_ingested_item_set_is_a_new_run_not_a_resume(store: FeatureStore, tmp_path: Path) -> None:
    medprobe.vqa.ingest(source=_items(tmp_path, "Is it bright?"), name="toy", store=store)
    first = medprobe.vqa.run(items="toy", model="tiny-random/llava", n_boot=20, no_progress=True, store=store)
    again = medprobe.vqa.run(items="toy", model="tiny-random/llava", n_boot=20, no_progress=True, store=store)
    assert again.run_id == first.run_id and again.already_done == 4 and again.scored_now == 0  # a true resume
    medprobe.vqa.ingest(source=_items(tmp_path, "Is there a fracture?"), name="toy", store=store)
    changed = medprobe.vqa.run(items="toy", model="tiny-random/llava", n_boot=20, no_progress=True, store=store)
    assert changed.run_id != first.run_id and changed.already_done == 0 and changed.scored_now == 4


def test_an_image_changed_on_disk_is_refused(store: FeatureStore, tmp_path: Path, capsys) -> None:
    medprobe.vqa.ingest(source=_items(tmp_path, "Is it bright?"), name="toy", store=store)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "img" / "2.png")  # new bytes, same path
    code, _, err = run_cli(capsys, "vqa", "run", "--items", "toy", "-m", "tiny-random/llava", "--store", store.url)
    assert code == EXIT_STORE and "2.png" in err and "changed since" in err, err


def test_items_that_left_the_source_leave_the_item_set(store: FeatureStore, tmp_path: Path) -> None:
    """The hostile check: 16 items ingested, the file cut to 4, and all 16 were still scored."""
    rows = [{"id": f"q{i}", "image": f"img/{i % 4}.png", "question": f"Question {i}?",
             "options": {"A": "yes", "B": "no"}, "answer": "AB"[i % 2], "split": "test"}
            for i in range(16)]  # fmt: skip
    _items(tmp_path, "unused")  # writes the four images
    path = tmp_path / "sixteen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert medprobe.vqa.ingest(source=str(path), name="cut", store=store).items_new == 16
    path.write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n")
    cut = medprobe.vqa.ingest(source=str(path), name="cut", store=store)
    assert cut.items_retired == 12 and cut.items_new == 0 and cut.items_unchanged == 4
    run = medprobe.vqa.run(items="cut", model="tiny-random/llava", n_boot=20, no_progress=True, store=store)
    assert run.scored_now == 4
    history = store.sql("SELECT count(*) FROM raw_vqa_items WHERE item_set = 'cut'").column(0)[0].as_py()
    assert history == 16 + 12
    again = medprobe.vqa.ingest(source=str(path), name="cut", store=store)
    assert again.items_retired == 0 and again.items_new == 0
