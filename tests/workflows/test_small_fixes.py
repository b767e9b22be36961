"""Small wrong-or-crashing behaviours found by the hostile run, each with what it does now."""

from __future__ import annotations

from pathlib import Path

import pytest

import medprobe
from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.workflows.similarity import label_mix


def test_report_onto_an_existing_file_says_so(tmp_path: Path) -> None:
    FeatureStore.open(str(tmp_path / "s"), create=True)
    (tmp_path / "report.md").write_text("mine")
    for report in (medprobe.report, medprobe.vqa.report):
        with pytest.raises(InvalidInputError, match="is a file"):
            report(run_ids=["r"], out=str(tmp_path / "report.md"), store=str(tmp_path / "s"))
    assert (tmp_path / "report.md").read_text() == "mine"


@pytest.mark.parametrize("occupied", ["file", "folder"])
def test_models_save_never_writes_into_something_that_exists(tmp_path: Path, occupied: str) -> None:
    target = tmp_path / "model"
    if occupied == "file":
        target.write_text("mine")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="new or empty folder"):
        medprobe.models(model="tiny-random/clip", save=str(target))
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["model"] if occupied == "file" else ["model", "notes.txt"])


def test_a_malformed_jsonl_line_is_named(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "q1", "image": "a.png", "question": "?", "options": ["yes", "no"], "answer": "A"}\n'
                     '{"id": "q2", "image": "b.png", oops}\n')  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"items.jsonl, line 2: not valid JSON"):
        medprobe.vqa.ingest(source=str(items), name="toy", store=str(tmp_path / "s"))


def test_search_label_mix_counts_an_image_once_however_many_datasets_hold_it() -> None:
    rows = [
        {"image_hash": "a", "labels": {"grade": "2"}},  # one image in two datasets
        {"image_hash": "a", "labels": {"grade": "2"}},
        {"image_hash": "b", "labels": {"grade": "0", "findings": ["x", "y"]}},
    ]
    assert label_mix(rows) == {"findings": {"x": 1, "y": 1}, "grade": {"0": 1, "2": 1}}
