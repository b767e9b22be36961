"""The text a model sees for one item: few-shot exemplars, the vignette, the question and its (rotated) options.

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


def option_order(item: Item, rotation: int) -> list[str]:
    """The source letters in the order shown for ``rotation``."""
    letters = [k for k, _ in item.options]
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
    parts = []
    for ex in exemplars:
        gold = LETTERS[option_order(ex, 0).index(ex.answer)]
        parts.append(f"{_block(ex, 0)}\nAnswer: {gold}")
    parts.append(f"{_block(item, rotation)}\n{REASONING_INSTRUCTION if reasoning else INSTRUCTION}")
    return "\n\n".join(parts)


def choose_exemplars(item: Item, pool: Sequence[Item], k: int, seed: int) -> list[Item]:
    """``k`` training items for ``item``'s prompt: none sharing its group or images, balanced over answer letters,
    drawn with a generator seeded by ``(seed, item id)`` so every question's exemplars are reproducible."""
    if k <= 0:
        return []
    usable = [
        p for p in pool
        if p.item_id != item.item_id
        and (item.group_id is None or p.group_id != item.group_id)
        and not set(p.image_hashes) & set(item.image_hashes)
    ]  # fmt: skip
    if len(usable) < k:
        raise InvalidInputError(
            f"--shots {k}: only {len(usable)} training items share neither patient/image group nor image with item "
            f"{item.item_id}; use fewer shots"
        )
    digest = hashlib.sha256(f"{seed}:{item.item_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    by_letter: dict[str, list[Item]] = {}
    for p in usable:
        by_letter.setdefault(LETTERS[option_order(p, 0).index(p.answer)], []).append(p)
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
