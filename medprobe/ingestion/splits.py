"""Train / val / test splits: keep the one a dataset ships with, or make a grouped, stratified, seeded one.

A generated split never puts one group (patient, lesion) on two sides, keeps each label's proportion close
to the requested fractions, and depends only on the records, the fractions and the seed. Groups that already
have a split in the store are pinned to it, so a re-ingest that adds images cannot make a patient straddle.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from medprobe.errors import InvalidInputError

_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}


def normalise_split(name: str, *, where: str = "") -> str:
    """``Training``/``valid``/``Test`` ... -> ``train``/``val``/``test``; anything else is an error."""
    key = str(name).strip().lower()
    if key not in _SPLIT_NAMES:
        raise InvalidInputError(
            f"{where + ': ' if where else ''}unknown split {name!r}; use one of train, val (validation), test"
        )
    return _SPLIT_NAMES[key]


def is_split_name(name: str) -> bool:
    """True for folder or column values that name a split (train, validation, test, ...)."""
    return str(name).strip().lower() in _SPLIT_NAMES


@dataclass(frozen=True)
class SplitPlan:
    """How to make splits a dataset does not ship: fractions of all data (test) and of training data (val)."""

    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in (("test fraction", self.test_fraction), ("val fraction", self.val_fraction)):
            if not 0.0 <= value < 1.0:
                raise InvalidInputError(f"{name} must be in [0, 1); got {value}")


def grouped_stratified_assign(
    strata: Sequence[str],
    groups: Sequence[str | None],
    fractions: Mapping[str, float],
    *,
    seed: int,
    pinned: Mapping[str, str] | None = None,
) -> list[str]:
    """Assign each record to a split so that no group spans two splits and every stratum keeps ``fractions``.

    Records whose group is None are their own group. ``pinned`` maps a group id to a split it must keep.
    Whole-number targets per (split, stratum) come from :func:`integer_targets`; then a greedy takes groups in a
    seeded random order, largest first, each to the split that most reduces the squared shortfall of its
    strata against those targets (relative to each stratum's size). Deterministic for equal inputs.
    """
    if len(strata) != len(groups):
        raise ValueError("strata and groups must have the same length")
    names = [s for s, f in sorted(fractions.items(), key=lambda kv: (-kv[1], kv[0])) if f > 0]
    total_fraction = sum(fractions.values())
    if not names or abs(total_fraction - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be positive and sum to 1; got {dict(fractions)}")
    pinned = pinned or {}

    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[f"g:{g}" if g is not None else f"i:{i}"].append(i)
    totals = Counter(strata)
    rng = random.Random(seed)
    target = integer_targets(totals, {s: fractions[s] for s in names}, rng)
    have: dict[str, Counter] = {s: Counter() for s in names}
    out: list[str] = [""] * len(strata)

    def place(unit: str, split: str) -> None:
        for i in members[unit]:
            out[i] = split
            have[split][strata[i]] += 1

    free: list[str] = []
    for unit in members:
        group = unit[2:] if unit.startswith("g:") else None
        if group is not None and group in pinned:
            split = pinned[group]
            if split not in fractions:
                raise InvalidInputError(f"group {group!r} is stored in split {split!r}, not in {names}")
            have.setdefault(split, Counter())
            place(unit, split)
        else:
            free.append(unit)

    free.sort()
    rng.shuffle(free)
    free.sort(key=lambda u: -len(members[u]))  # stable: ties keep the seeded order
    for unit in free:
        counts = Counter(strata[i] for i in members[unit])
        best, best_cost = names[0], float("inf")
        for s in names:
            cost = 0.0
            for k, c in counts.items():
                gap = have[s][k] - target[s][k]
                cost += c * (2.0 * gap + c) / totals[k]
            if cost < best_cost - 1e-12:
                best, best_cost = s, cost
        place(unit, best)
    return out


def integer_targets(
    totals: Mapping[str, int], fractions: Mapping[str, float], rng: random.Random
) -> dict[str, dict[str, int]]:
    """Whole-number target count per (split, stratum): each stratum's counts sum to its size and each split's
    to its share of all records (largest remainders first, ties in seeded order)."""
    strata = sorted(totals)
    rng.shuffle(strata)
    n = sum(totals.values())
    target = {s: {k: int(f * totals[k]) for k in strata} for s, f in fractions.items()}
    need = {s: round(f * n) - sum(target[s].values()) for s, f in fractions.items()}
    left = {k: totals[k] - sum(target[s][k] for s in fractions) for k in strata}
    order = sorted(
        ((f * totals[k] - target[s][k], i, s, k) for i, k in enumerate(strata) for s, f in fractions.items()),
        key=lambda x: (-x[0], x[1]),
    )
    for _, _, s, k in order:
        if left[k] > 0 and need[s] > 0:
            target[s][k] += 1
            left[k] -= 1
            need[s] -= 1
    for k in strata:  # rounding of the split totals can leave a record over: give it to the largest split
        if left[k] > 0:
            biggest = max(fractions, key=lambda s: fractions[s])
            target[biggest][k] += left[k]
    return target


def rarest_label_strata(label_sets: Sequence[Sequence[str]], none: str = "<none>") -> list[str]:
    """One stratum per multilabel record: its rarest label (by count over all records), or ``none``."""
    counts = Counter(label for labels in label_sets for label in set(labels))
    return [min(labels, key=lambda x: (counts[x], x)) if labels else none for labels in label_sets]


def _policy(kind: str, plan: SplitPlan, group_name: str | None, stratify: str | None, **parts: float) -> str:
    fields = [f"{k}={v:g}" for k, v in parts.items()]
    fields += [f"seed={plan.seed}", f"group={group_name or 'none'}", f"stratify={stratify or 'none'}"]
    return f"{kind}:" + ",".join(fields)


def assign_splits(
    shipped: Sequence[str | None],
    strata: Sequence[str],
    groups: Sequence[str | None],
    plan: SplitPlan,
    *,
    group_name: str | None = None,
    stratify: str | None = None,
    pinned: Mapping[str, str] | None = None,
) -> tuple[list[str], str]:
    """Final split of every record and the policy string recorded in the ``datasets`` row.

    - every record has a shipped split that includes test or val: keep it (``shipped``); when there is a test
      split but no val split, carve val out of train (``shipped+val:...``).
    - no shipped split (or train only): generate test from all records, then val from the rest
      (``generated:...``).
    """
    n = len(strata)
    given = [s for s in shipped if s is not None]
    if given and len(given) != n:
        raise InvalidInputError(
            f"{n - len(given)} of {n} records have no split while the others have one; "
            "give every record a split, or none (to generate one)"
        )
    present = set(given)
    if present & {"test", "val"}:
        splits = list(given)
        if "val" in present or plan.val_fraction == 0:
            return splits, "shipped"
        train_idx = [i for i, s in enumerate(splits) if s == "train"]
        sub = grouped_stratified_assign(
            [strata[i] for i in train_idx],
            [groups[i] for i in train_idx],
            {"train": 1 - plan.val_fraction, "val": plan.val_fraction},
            seed=plan.seed,
            pinned=_only(pinned, ("train", "val")),
        )
        for i, s in zip(train_idx, sub, strict=True):
            splits[i] = s
        return splits, _policy("shipped+val", plan, group_name, stratify, val=plan.val_fraction)

    fractions = {"train": 1 - plan.test_fraction, "test": plan.test_fraction}
    first = grouped_stratified_assign(strata, groups, fractions, seed=plan.seed, pinned=_merge_train_val(pinned))
    rest = [i for i, s in enumerate(first) if s == "train"]
    if plan.val_fraction > 0 and rest:
        sub = grouped_stratified_assign(
            [strata[i] for i in rest],
            [groups[i] for i in rest],
            {"train": 1 - plan.val_fraction, "val": plan.val_fraction},
            seed=plan.seed + 1,
            pinned=_only(pinned, ("train", "val")),
        )
        for i, s in zip(rest, sub, strict=True):
            first[i] = s
    return first, _policy("generated", plan, group_name, stratify, test=plan.test_fraction, val=plan.val_fraction)


def _only(pinned: Mapping[str, str] | None, splits: tuple[str, ...]) -> dict[str, str]:
    return {g: s for g, s in (pinned or {}).items() if s in splits}


def _merge_train_val(pinned: Mapping[str, str] | None) -> dict[str, str]:
    return {g: ("test" if s == "test" else "train") for g, s in (pinned or {}).items()}
