"""Layer specs, the same grammar in every command: ``all``, ``5``, ``-1``, ``0,4,-1``, ``0-11``, ``4:12:2``, mixed.

A spec is resolved against the layers that exist: a model's layers ``0..n-1`` when extracting
(:func:`parse_layers`), or a feature set's *stored* layers when probing or exporting (:func:`resolve_layers`).
Non-negative integers name layers; negative integers count from the last existing layer (``-1`` = the last,
``-2`` the one before it). ``a-b`` includes both ends; ``a:b[:step]`` follows Python slices over layer numbers
(an end of ``-k`` is the k-th existing layer from the last). Ranges keep only layers that exist. The result is
sorted and duplicate-free.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from medprobe.errors import InvalidInputError

_INT = r"-?\d+"
_DASH_RANGE = re.compile(rf"^({_INT})\s*-\s*({_INT})$")
_SLICE = re.compile(rf"^({_INT})?\s*:\s*({_INT})?(?:\s*:\s*({_INT}))?$")


def _describe(available: Sequence[int], what: str) -> str:
    if list(available) == list(range(len(available))):
        return f"{what} has {len(available)} layers (valid: 0..{len(available) - 1} or -{len(available)}..-1)"
    return f"{what} has layers {list(available)} (or -1..-{len(available)} counted from the last)"


def _one(value: int, available: Sequence[int], spec: str, what: str) -> int:
    """A single layer: a stored/model layer number, or a negative index counted from the last."""
    if value < 0:
        if -value > len(available):
            raise InvalidInputError(f"layer {value} in --layers {spec!r} is out of range: {_describe(available, what)}")
        return available[value]
    if value not in available:
        raise InvalidInputError(f"layer {value} in --layers {spec!r} is out of range: {_describe(available, what)}")
    return value


def _bound(value: int, available: Sequence[int], part: str, spec: str, what: str) -> int:
    """A slice end as a layer number: negatives count from the last existing layer (Python semantics)."""
    if value > available[-1] + 1 or -value > len(available):
        raise InvalidInputError(f"slice {part!r} in --layers {spec!r} is out of range: {_describe(available, what)}")
    return value if value >= 0 else available[value]


def resolve_layers(spec: str | int, available: Sequence[int], *, what: str = "the feature set") -> list[int]:
    """Resolve a layer spec against the ``available`` layer numbers -> sorted unique layer numbers."""
    available = sorted({int(x) for x in available})
    if not available:
        raise InvalidInputError(f"{what} has no layers")
    text = str(spec).strip()
    if not text:
        raise InvalidInputError("--layers is empty; use e.g. 'all', '-1', '0,6,11', '0-11' or '4:12'")
    if text.lower() == "all":
        return list(available)
    present = set(available)
    chosen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise InvalidInputError(f"--layers {spec!r} has an empty item")
        if re.fullmatch(_INT, part):
            chosen.add(_one(int(part), available, text, what))
        elif m := _DASH_RANGE.match(part):
            lo, hi = (_one(int(g), available, text, what) for g in m.groups())
            if lo > hi:
                raise InvalidInputError(f"range {part!r} in --layers {text!r} runs backwards ({lo} > {hi})")
            chosen.update(x for x in available if lo <= x <= hi)
        elif m := _SLICE.match(part):
            start, stop, step = (int(g) if g is not None else None for g in m.groups())
            if step == 0:
                raise InvalidInputError(f"slice {part!r} in --layers {text!r} has step 0")
            first = None if start is None else _bound(start, available, part, text, what)
            end = None if stop is None else _bound(stop, available, part, text, what)
            picked = [x for x in range(available[-1] + 1)[slice(first, end, step)] if x in present]
            if not picked:
                raise InvalidInputError(
                    f"slice {part!r} in --layers {text!r} selects no layer: {_describe(available, what)}"
                )
            chosen.update(picked)
        else:
            raise InvalidInputError(
                f"cannot read {part!r} in --layers {text!r}; use 'all', integers, 'a-b' or 'a:b[:step]'"
            )
    return sorted(chosen)


def resolve_layer(spec: str | int, available: Sequence[int], *, what: str = "the feature set") -> int:
    """Resolve a spec that must name exactly one layer (``-1``, ``12``)."""
    layers = resolve_layers(spec, available, what=what)
    if len(layers) != 1:
        raise InvalidInputError(f"--layers {spec!r} names {len(layers)} layers {layers}; give exactly one here")
    return layers[0]


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Resolve a layer spec against a model with ``n_layers`` layers -> sorted unique indices."""
    if n_layers <= 0:
        raise InvalidInputError(f"the model reports {n_layers} layers; nothing to extract")
    return resolve_layers(spec, range(n_layers), what="the model")
