"""Scoring a free-text answer against a reference answer (open-ended medical VQA).

:func:`normalise` is the one rule both sides go through:

============================================  ==================
text                                          normalised
============================================  ==================
``"The Left Lung."``                          ``left lung``
``"  an   X-ray "``                           ``x ray``
``"Yes!"``                                    ``yes``
``"2.0 cm"`` / ``"two cm"`` / ``"02 cm"``      ``2 cm``
``"3.50"``                                    ``3.5``
``"T2-weighted MRI"``                         ``t2 weighted mri``
============================================  ==================

Lower case; punctuation becomes a space (a decimal point inside a number is kept); the articles *a*, *an*, *the* are
dropped; number words zero to twenty and numerals are written by their value (``2.0`` and ``two`` are ``2``);
whitespace collapses. The metrics:

- ``exact_match``: the normalised prediction equals the normalised reference;
- ``token_f1``, ``token_recall``: over the normalised tokens (SQuAD's F1 with multiplicity; recall is the share of
  the reference's tokens found in the prediction, the open-question metric of LLaVA-Med-style papers);
- ``yes_no``: for a reference that normalises to *yes* or *no*, whether the prediction's first yes/no word is it
  (None for other references).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from medprobe.errors import InvalidInputError

_ARTICLES = {"a", "an", "the"}
_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")  # fmt: skip
_NUMBER_WORDS = {w: i for i, w in enumerate(_WORDS)}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PUNCT = re.compile(r"(?<!\d)\.|\.(?!\d)|[^\w\s.]|_")


def _number(token: str) -> str:
    if token in _NUMBER_WORDS:
        return str(_NUMBER_WORDS[token])
    if _NUMBER.fullmatch(token):
        value = float(token)
        return str(int(value)) if value.is_integer() else repr(value)
    return token


def normalise(text: str) -> str:
    """The normal form of an answer (see the module's table)."""
    lowered = _PUNCT.sub(" ", str(text).lower())
    tokens = [_number(t) for t in lowered.split() if t not in _ARTICLES]
    return " ".join(tokens)


def _tokens(text: str) -> list[str]:
    return normalise(text).split()


def open_scores(prediction: str | None, reference: str) -> dict[str, Any]:
    """``exact_match``, ``token_f1``, ``token_recall`` and ``yes_no`` of one prediction against its reference; a
    missing prediction scores 0 (and a wrong yes/no). A reference that normalises to nothing is refused."""
    ref = _tokens(reference)
    if not ref:
        raise InvalidInputError(f"reference answer {reference!r} normalises to nothing (no word or number in it)")
    pred = _tokens(prediction or "")
    overlap = sum((Counter(pred) & Counter(ref)).values())
    precision = overlap / len(pred) if pred else 0.0
    recall = overlap / len(ref)
    f1 = 2 * precision * recall / (precision + recall) if overlap else 0.0
    yes_no = None
    if ref in (["yes"], ["no"]):
        first = next((t for t in pred if t in ("yes", "no")), None)
        yes_no = first == ref[0]
    return {"exact_match": pred == ref, "token_f1": f1, "token_recall": recall, "yes_no": yes_no}
