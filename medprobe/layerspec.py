"""Layer specs: ``all``, ``5``, ``-1``, ``0,4,-1``, ``0-11``, ``4:12`` (Python slice, end excluded), mixed.

Ranges ``a-b`` include both ends; ``a:b`` and ``a:b:step`` follow Python slices (negative ends
count from the last layer). The result is sorted, duplicate-free, and non-negative.
"""

from __future__ import annotations

import re

from medprobe.errors import InvalidInputError

_INT = r"-?\d+"
_DASH_RANGE = re.compile(rf"^({_INT})\s*-\s*({_INT})$")
_SLICE = re.compile(rf"^({_INT})?\s*:\s*({_INT})?(?:\s*:\s*({_INT}))?$")


def _index(value: int, n_layers: int, spec: str) -> int:
    if not -n_layers <= value < n_layers:
        raise InvalidInputError(
            f"layer {value} in --layers {spec!r} is out of range: the model has {n_layers} layers "
            f"(valid: 0..{n_layers - 1} or -{n_layers}..-1)"
        )
    return value % n_layers


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Resolve a layer spec against a model with ``n_layers`` layers -> sorted unique indices."""
    if n_layers <= 0:
        raise InvalidInputError(f"the model reports {n_layers} layers; nothing to extract")
    text = str(spec).strip()
    if not text:
        raise InvalidInputError("--layers is empty; use e.g. 'all', '-1', '0,6,11', '0-11' or '4:12'")
    if text.lower() == "all":
        return list(range(n_layers))
    chosen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise InvalidInputError(f"--layers {spec!r} has an empty item")
        if re.fullmatch(_INT, part):
            chosen.add(_index(int(part), n_layers, spec))
        elif m := _DASH_RANGE.match(part):
            lo, hi = (_index(int(g), n_layers, spec) for g in m.groups())
            if lo > hi:
                raise InvalidInputError(f"range {part!r} in --layers {spec!r} runs backwards ({lo} > {hi})")
            chosen.update(range(lo, hi + 1))
        elif m := _SLICE.match(part):
            start, stop, step = (int(g) if g is not None else None for g in m.groups())
            for bound in (start, stop):
                if bound is not None and not -n_layers <= bound <= n_layers:
                    raise InvalidInputError(
                        f"slice {part!r} in --layers {spec!r} is out of range: the model has {n_layers} layers"
                    )
            if step == 0:
                raise InvalidInputError(f"slice {part!r} in --layers {spec!r} has step 0")
            picked = range(n_layers)[slice(start, stop, step)]
            if not picked:
                raise InvalidInputError(f"slice {part!r} in --layers {spec!r} selects no layer of {n_layers}")
            chosen.update(picked)
        else:
            raise InvalidInputError(
                f"cannot read {part!r} in --layers {spec!r}; use 'all', integers, 'a-b' or 'a:b[:step]'"
            )
    return sorted(chosen)
