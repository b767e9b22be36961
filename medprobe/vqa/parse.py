"""Reading the chosen option out of a free generation, in layers, never guessing.

1. ``bare_letter``: the answer is a shown letter alone or leads the text ("B", "(B)", "B.", "**B**", "B) yes", or
   "B no" when "no" is option B's text; "A 45-year-old ..." is not a letter).
2. ``answer_is``: "the answer is B", "Answer: (B)", "correct option: B", anywhere in the text (the last one wins).
3. ``option_text``: exactly one option's text appears in the answer (whole words, case-insensitive); when several
   do, the one that is the whole answer wins, else it is unparsed.
4. ``unparsed``: none of the above. The item counts as wrong and the parse-failure rate reports it; there is no
   random fallback.

With ``reasoning`` (a model asked to think before it answers), ``<think>...</think>`` blocks are set aside first;
``answer_tag``: the content of the last ``<answer>...</answer>`` is read by rules 1 and 3; then rules 1-3 on the text
after the reasoning; then ``last_letter``: the last standalone shown letter ("... so B.", "(C)"), which plain mode never
uses because a letter inside a sentence is not an answer; even here "A" and "I" followed by a word are the article and
the pronoun ("A 45-year-old", "I think").

Open-ended items (:func:`parse_open`) have no options to find: plain mode takes the first line of the generation
(``open_text``; an "Answer:" label before it is dropped); with reasoning, the last ``<answer>`` tag
(``answer_tag``), else the text after the last "the answer is" / "Answer:" (``answer_is``), else ``unparsed``.
:func:`reasoning_of` is what a reasoning run stores as the model's reasoning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_DECORATION = re.compile(r"^[\s*_`'\"]+|[\s*_`'\".]+$")
_LEADING = re.compile(r"^[(\[]?([A-J])(?:[.:)\],]|$)")  # B / (B) / B. / B: / [B] / B) ...
_LEADING_SPACE = re.compile(r"^([A-J])\s+(.+)$", re.DOTALL)  # "B no": only when the option's text follows
_ANSWER_IS = re.compile(
    r"(?:answer|option|choice)\s*(?:is|would be|:|=)?\s*(?:option\s*)?[\s*(\[]*([A-J])\b(?![\w'])", re.IGNORECASE
)


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_STANDALONE = re.compile(r"(?<![\w'])\(?([A-J])\)?(?![\w'])")


def parse_answer(text: str, shown: Sequence[tuple[str, str]], *, reasoning: bool = False) -> tuple[str | None, str]:
    """``(shown letter or None, parser step)`` for a generation and the options as shown ``(letter, text)``."""
    if not reasoning:
        return _parse_plain(text, shown)
    letters = {letter for letter, _ in shown}
    tags = _ANSWER_TAG.findall(text)
    if tags:
        letter, step = _parse_plain(tags[-1], shown)
        return (letter, "answer_tag") if letter is not None else (None, "unparsed")
    rest = _THINK.sub(" ", text).strip()
    letter, step = _parse_plain(rest, shown)
    if letter is not None:
        return letter, step
    standalone = [m.group(1) for m in _STANDALONE.finditer(rest) if m.group(1) in letters
                  and not _english_word(m.group(1), rest[m.end():])]  # fmt: skip
    if standalone:
        return standalone[-1], "last_letter"
    return None, "unparsed"


def _parse_plain(text: str, shown: Sequence[tuple[str, str]]) -> tuple[str | None, str]:
    letters = {letter for letter, _ in shown}
    clean = _DECORATION.sub("", text.strip())
    if (m := _LEADING.match(clean)) and m.group(1) in letters:
        return m.group(1), "bare_letter"
    if (m := _LEADING_SPACE.match(clean)) and m.group(1) in letters:
        text_of = dict(shown)[m.group(1)].strip().lower()
        if text_of and m.group(2).strip().lower().startswith(text_of):
            return m.group(1), "bare_letter"
    hits = [m.group(1).upper() for m in _ANSWER_IS.finditer(text)]
    hits = [h for h in hits if h in letters]
    if hits:
        return hits[-1], "answer_is"
    lowered = text.lower()
    found = [
        letter for letter, option in shown
        if option.strip() and re.search(rf"(?<!\w){re.escape(option.strip().lower())}(?!\w)", lowered)
    ]  # fmt: skip
    if len(found) == 1:
        return found[0], "option_text"
    if len(found) > 1:
        whole = [letter for letter, option in shown if option.strip().lower() == clean.lower()]
        if len(whole) == 1:
            return whole[0], "option_text"
    return None, "unparsed"


_OPEN_ANSWER_IS = re.compile(r"(?:\banswer\s*(?:is|would be)\s*:?|\banswer\s*:)\s*(.+)", re.IGNORECASE)
_LABEL = re.compile(r"^\s*(?:final\s+)?answer\s*:\s*", re.IGNORECASE)


def parse_open(text: str, *, reasoning: bool = False) -> tuple[str | None, str]:
    """``(answer text or None, parser step)`` of a generation for an open-ended item."""
    if reasoning:
        tags = _ANSWER_TAG.findall(text)
        if tags:
            answer = tags[-1].strip()
            return (answer, "answer_tag") if answer else (None, "unparsed")
        rest = _THINK.sub(" ", text)
        hits = [m.group(1) for m in _OPEN_ANSWER_IS.finditer(rest)]
        answer = hits[-1].splitlines()[0].strip(" *_`'\".") if hits else ""
        return (answer, "answer_is") if answer else (None, "unparsed")
    lines = [line.strip() for line in _LABEL.sub("", text.strip()).splitlines() if line.strip()]
    return (lines[0], "open_text") if lines else (None, "unparsed")


def reasoning_of(text: str) -> str | None:
    """The reasoning in a generation: its ``<think>`` blocks, else the text before the last ``<answer>`` tag, else
    the whole text (None when empty)."""
    thoughts = [m.group(0) for m in _THINK.finditer(text)]
    if thoughts:
        body = " ".join(re.sub(r"</?think>", "", t, flags=re.IGNORECASE).strip() for t in thoughts)
    else:
        tags = list(_ANSWER_TAG.finditer(text))
        body = text[: tags[-1].start()] if tags else text
    return body.strip() or None


def _english_word(letter: str, after: str) -> bool:
    """"A 45-year-old", "A patient", "I think": the article or the pronoun, not an option letter."""
    return letter in ("A", "I") and re.match(r"\s+[a-z0-9]", after) is not None
