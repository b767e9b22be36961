"""VQA workflows: ``vqa.ingest`` (items), ``vqa.run`` (what a VLM answers), ``vqa.compare`` (two runs, paired) and
``vqa.report`` (plots). ``medprobe.vqa.ingest`` and friends are these functions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medprobe.schemas.vocab import ComputeDType, Split, VqaAnswerType, VqaLayout, VqaMode
from medprobe.trainer.defaults import N_BOOT
from medprobe.workflows.common import (
    ListArg,
    StoreArg,
    check_out_folder,
    choice,
    open_store,
    optional_choice,
    split_list,
)
from medprobe.workflows.results import Result, jsonable


@dataclass
class VqaIngestResult(Result):
    """What one ``vqa ingest`` read and wrote."""

    item_set: str
    layout: str
    items_read: int
    items_new: int
    items_unchanged: int
    items_retired: int
    images_new: int
    failures: int
    by_split: dict[str, int]
    by_kind: dict[str, int]
    skipped: dict[str, int]
    skipped_examples: dict[str, list[str]]


def ingest(*, source: str, name: str, layout: str | VqaLayout | None = None, store: StoreArg = None) -> VqaIngestResult:
    """Items into ``vqa_items`` (images content-addressed into ``images``; unreadable ones become ``failures``).

    Args:
        source: an items file (.jsonl/.csv/.tsv), a NEJM folder, or a published benchmark's files: VQA-RAD, SLAKE,
            PathVQA, OmniMedVQA (folders), a PMC-VQA CSV, VQA-Med qa_pairs (a .txt file or folder of them).
        name: the item set's name in the store.
        layout: the source's layout (default: detected).
        store: a store URL or an open ``FeatureStore`` (created if missing).
    """
    from medprobe.vqa.item_ingest import ingest_items

    chosen = optional_choice(VqaLayout, layout, "--layout")
    summary = ingest_items(open_store(store, create=True), source, name, None if chosen is None else chosen.value)
    return VqaIngestResult(**dataclasses.asdict(summary))


@dataclass
class VqaRunResult(Result):
    """A VQA run: accuracy with a group-clustered CI, chance and majority baselines, parse failures, calibration,
    per-category accuracy (``document`` holds all of it; the main numbers are attributes)."""

    run_id: str
    item_set: str
    model: str
    mode: str
    n_items: int
    accuracy: dict[str, Any]
    scored_now: int
    already_done: int
    document: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The run's whole document (what ``vqa run -f json`` prints)."""
        return jsonable(self.document)

    def rows(self) -> list[dict[str, Any]]:
        """One row per item category: its accuracy with CI."""
        return [{"run_id": self.run_id, "category": c, **dict(e)}
                for c, e in self.document.get("per_category", {}).items()]  # fmt: skip


def run(
    *, items: str, model: str, mode: str | VqaMode = VqaMode.loglik, shots: int = 0, fixed_shots: ListArg = None,
    circular: bool = False, split: str | Split = Split.test, shots_seed: int = 0, boot_seed: int = 0,
    max_new_tokens: int | None = None, reasoning: bool = False, by: ListArg = None, limit: int | None = None,
    answer_type: str | VqaAnswerType = VqaAnswerType.all, shots_with_images: bool = False,
    save_activations: bool = False, n_boot: int = N_BOOT,
    device: str | None = None, dtype: str | ComputeDType | None = None, trust_remote_code: bool = False,
    allow_pickle: bool = False, no_progress: bool = False, store: StoreArg = None,
) -> VqaRunResult:  # fmt: skip
    """Ask a VLM every item of an item set (resumable: the same call continues a killed run); accuracy with CIs.

    Args:
        items: the item set (its ``name`` at ingest); model: a VLM spec.
        mode: ``loglik`` (each option's log-likelihood), ``letter`` (the answer letter's probability) or
            ``generate`` (greedy text, parsed; ``max_new_tokens`` caps it: default 8, 32 for open-ended items, 512
            with ``reasoning``). Open-ended items: ``generate`` scores the answer against the reference (exact match,
            token F1 and recall, yes/no accuracy), ``loglik`` the reference's log-likelihood; ``letter`` refuses them.
        answer_type: ``all`` items, ``closed`` (multiple choice) or ``open`` (open-ended) only.
        reasoning: generate: ask the model to reason step by step and give the letter in ``<answer>`` tags; the
            parser reads the tags, "the answer is X", "Answer: X", the last standalone letter, or the option text,
            and records which rule matched (``parser_step``); a parse failure stays a failure.
        shots: few-shot exemplars drawn from the train split (``shots_seed``), never sharing the question's image;
            fixed_shots: these item ids as exemplars instead; shots_with_images: show each exemplar with its images
            (models that take several images per prompt; others refuse).
        circular: score every rotation of the options (multiple choice); split: the items scored; limit: only the
            first N.
        by: category columns to break accuracy down by, each value with a group-bootstrap CI (VQA-RAD:
            ``question_type``, ``image_organ``; default: every column the items carry); the result's ``by``.
        save_activations: also store every layer's answer-position state of every item as a feature set.
        n_boot, boot_seed: bootstrap replicates of the CIs and their seed.
        device, dtype, trust_remote_code, allow_pickle: how the model loads and runs.
        no_progress: no progress bar; store: a store URL or an open ``FeatureStore``.
    """
    from medprobe.vqa.runner import VqaRunSpec, run_vqa

    compute = optional_choice(ComputeDType, dtype, "--dtype")
    spec = VqaRunSpec(
        item_set=items, model=model, mode=choice(VqaMode, mode, "--mode").value, shots=shots,
        fixed_shots=tuple(split_list(fixed_shots)), circular=circular, split=choice(Split, split, "--split").value,
        seed=shots_seed, boot_seed=boot_seed, max_new_tokens=max_new_tokens, reasoning=reasoning,
        by=tuple(split_list(by)), n_boot=n_boot,
        device=device,
        dtype=None if compute is None else compute.value, trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle, limit=limit, save_activations=save_activations,
        answer_type=choice(VqaAnswerType, answer_type, "--answer-type").value, shots_with_images=shots_with_images,
    )  # fmt: skip
    doc = run_vqa(open_store(store), spec, show_progress=not no_progress)
    return VqaRunResult(run_id=doc["run_id"], item_set=doc["item_set"], model=doc["model"], mode=doc["mode"],
                        n_items=int(doc["n_items"]), accuracy=doc["accuracy"], scored_now=doc["scored_now"],
                        already_done=doc["already_done"], document=doc)  # fmt: skip


@dataclass
class VqaCompareResult(Result):
    """Two runs on the same items: accuracy A - B (paired, group-clustered bootstrap) and McNemar's test."""

    run_a: str
    run_b: str
    n_items: int
    n_groups: int
    accuracy_a: float
    accuracy_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_bootstrap: float
    only_a_right: int
    only_b_right: int
    p_mcnemar: float
    n_boot: int
    by: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # column -> value -> the same, paired

    def rows(self) -> list[dict[str, Any]]:
        """The overall comparison, then one row per category value (``column``, ``value``)."""
        doc = self.to_dict()
        overall = {k: v for k, v in doc.items() if k != "by"}
        return [overall] + [{"run_a": self.run_a, "run_b": self.run_b, "column": column, "value": value, **entry}
                            for column, values in self.by.items() for value, entry in values.items()]  # fmt: skip


def compare(*, run_a: str, run_b: str, n_boot: int = N_BOOT, boot_seed: int = 0,
            store: StoreArg = None) -> VqaCompareResult:  # fmt: skip
    """Accuracy of run ``run_a`` minus run ``run_b`` (the reference) on the items both answered: a paired,
    group-clustered bootstrap CI (``n_boot`` replicates, ``boot_seed``) and McNemar's test, overall and per value of
    every category column the items carry (``by``); ``store``: a store URL or an open ``FeatureStore``."""
    from medprobe.vqa.paired import compare_runs

    return VqaCompareResult(**compare_runs(open_store(store), run_a, run_b, n_boot=n_boot, seed=boot_seed))


@dataclass
class VqaReportResult(Result):
    """The files a VQA report wrote."""

    out: str
    paths: list[str]

    def rows(self) -> list[dict[str, str]]:
        """One row per file written."""
        return [{"path": p} for p in self.paths]


def report(*, run_ids: Sequence[str], out: str = "vqa-report", store: StoreArg = None) -> VqaReportResult:
    """PNG plots (accuracy per category, letter distribution, reliability) and a Markdown summary of the VQA runs
    ``run_ids``, written into the folder ``out``; ``store``: a store URL or an open ``FeatureStore``."""
    from medprobe.vqa.plots import write_vqa_report

    check_out_folder(out)
    paths = write_vqa_report(open_store(store), list(run_ids), out)
    return VqaReportResult(out=out, paths=[str(p) for p in paths])
