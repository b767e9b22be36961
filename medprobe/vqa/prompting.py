"""The text a model sees for one item: few-shot exemplars, the vignette, the question and its (rotated) options.

An open-ended item (no options) shows its question and :data:`OPEN_INSTRUCTION` (with ``--reasoning``,
:data:`OPEN_REASONING_INSTRUCTION`); its exemplars are open-ended training items shown with their reference answers.

Rotation ``r`` shows the source options shifted by ``r`` places: shown letter ``A`` is the source option at
position ``r``, and so on; ``option_order`` records the source letters in the order shown. Few-shot exemplars are
drawn per question with a fixed seed from the item set's training split, never from the question's ``group_id``
(its patient or image), balanced over answer letters, and shown as text (question, options, answer letter).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medprobe.errors import InvalidInputError

LETTERS = "ABCDEFGHIJ"
INSTRUCTION = "Answer with the letter of the correct option."
# --reasoning: the model reasons first, then answers in tags (medprobe.vqa.parse reads them)
REASONING_INSTRUCTION = (
    "Think through the question step by step, then give the letter of the correct option inside <answer></answer>, "
    "for example <answer>A</answer>."
)
# open-ended items: the wording of LLaVA-1.5 / LLaVA-Med's short-answer VQA prompt
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."
OPEN_REASONING_INSTRUCTION = (
    "Think through the question step by step, then give your final answer as a single word or phrase inside "
    "<answer></answer>."
)
PROMPT_VERSION = "mc-v1"  # bump when the text below changes: it is part of a run's identity


@dataclass(frozen=True)
class Item:
    """One stored item (a ``vqa_items`` row) as the scorers use it."""

    item_id: str
    image_hashes: tuple[str, ...]
    question: str
    options: tuple[tuple[str, str], ...]  # (source letter, text) in source order
    answer: str  # source letter
    context: str | None = None
    group_id: str | None = None
    category: str | None = None
    split: str = "test"
    categories: tuple[tuple[str, str], ...] = ()  # (column, value) of every category column the source gave

    @classmethod
    def from_row(cls, row: dict) -> Item:
        opts = json.loads(row["options"])
        return cls(
            item_id=row["item_id"], image_hashes=tuple(row["image_hashes"]), question=row["question"],
            options=tuple((k, v) for k, v in opts.items()), answer=row["answer"], context=row.get("context"),
            group_id=row.get("group_id"), category=row.get("category"), split=row.get("split") or "test",
            categories=tuple(sorted(json.loads(row.get("categories") or "{}").items())),
        )  # fmt: skip

    @property
    def n_options(self) -> int:
        return len(self.options)

    @property
    def is_open(self) -> bool:
        """An open-ended item: no options; ``answer`` is the reference text."""
        return not self.options


def option_order(item: Item, rotation: int) -> list[str]:
    """The source letters in the order shown for ``rotation``."""
    letters = [k for k, _ in item.options]
    if not letters:
        return []
    r = rotation % len(letters)
    return letters[r:] + letters[:r]


def shown_options(item: Item, rotation: int) -> list[tuple[str, str]]:
    """``(shown letter, text)`` for ``rotation``."""
    text = dict(item.options)
    return [(LETTERS[i], text[src]) for i, src in enumerate(option_order(item, rotation))]


def _block(item: Item, rotation: int, *, with_context: bool = True) -> str:
    lines = []
    if with_context and item.context:
        lines.append(item.context.strip())
    lines.append(f"Question: {item.question.strip()}")
    lines += [f"{letter}. {text}" for letter, text in shown_options(item, rotation)]
    return "\n".join(lines)


def question_text(item: Item, rotation: int, exemplars: Sequence[Item] = (), *, reasoning: bool = False) -> str:
    """The user turn: exemplars (each with its answer letter), then the item, then the instruction."""
    parts = [exemplar_text(ex) for ex in exemplars]
    if item.is_open:
        instruction = OPEN_REASONING_INSTRUCTION if reasoning else OPEN_INSTRUCTION
    else:
        instruction = REASONING_INSTRUCTION if reasoning else INSTRUCTION
    parts.append(f"{_block(item, rotation)}\n{instruction}")
    return "\n\n".join(parts)


def exemplar_text(item: Item) -> str:
    """A few-shot exemplar as shown: its vignette, question and options, then its answer."""
    return f"{_block(item, 0)}\nAnswer: {gold_text(item)}"


def gold_text(item: Item) -> str:
    """What an exemplar shows as its answer: the gold letter, or an open item's reference text."""
    return item.answer if item.is_open else LETTERS[option_order(item, 0).index(item.answer)]


def choose_exemplars(item: Item, pool: Sequence[Item], k: int, seed: int) -> list[Item]:
    """``k`` training items of ``item``'s kind (multiple choice or open-ended) for its prompt: none sharing its group
    or images, balanced over answer letters (open items: over yes, no and other answers), drawn with a generator
    seeded by ``(seed, item id)`` so every question's exemplars are reproducible."""
    if k <= 0:
        return []
    usable = [
        p for p in pool
        if p.item_id != item.item_id and p.is_open == item.is_open
        and (item.group_id is None or p.group_id != item.group_id)
        and not set(p.image_hashes) & set(item.image_hashes)
    ]  # fmt: skip
    if len(usable) < k:
        kind = "open-ended" if item.is_open else "multiple choice"
        raise InvalidInputError(
            f"--shots {k}: only {len(usable)} training items of its kind ({kind}) share neither patient/image group "
            f"nor image with item {item.item_id}; use fewer shots"
        )
    digest = hashlib.sha256(f"{seed}:{item.item_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    by_letter: dict[str, list[Item]] = {}
    for p in usable:
        by_letter.setdefault(_balance_key(p), []).append(p)
    for group in by_letter.values():
        rng.shuffle(group)
    letters = sorted(by_letter)
    rng.shuffle(letters)
    out: list[Item] = []
    while len(out) < k:  # round robin over the answer letters
        for letter in letters:
            if by_letter[letter] and len(out) < k:
                out.append(by_letter[letter].pop())
    return out


def _balance_key(item: Item) -> str:
    if not item.is_open:
        return LETTERS[option_order(item, 0).index(item.answer)]
    answer = item.answer.strip().lower().rstrip(".")
    return answer if answer in ("yes", "no") else "other"
