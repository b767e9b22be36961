"""Generated splits: grouped (no patient on two sides), stratified, seeded; shipped splits kept."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medprobe.errors import InvalidInputError
from medprobe.ingestion.splits import (
    SplitPlan,
    assign_splits,
    grouped_stratified_assign,
    normalise_split,
    rarest_label_strata,
)


@st.composite
def grouped_records(draw):
    """Patients with 1-3 images each; a patient's images mostly share a label (like left/right knees)."""
    n_classes = draw(st.integers(2, 5))
    n_groups = draw(st.integers(60, 300))
    strata, groups = [], []
    for g in range(n_groups):
        base = draw(st.integers(0, n_classes - 1))
        for _ in range(draw(st.integers(1, 3))):
            label = base if draw(st.integers(0, 4)) else draw(st.integers(0, n_classes - 1))
            strata.append(f"c{label}")
            groups.append(None if g % 7 == 0 else f"p{g}")
    return strata, groups


def _straddling(groups, splits) -> set:
    seen: dict = {}
    bad = set()
    for g, s in zip(groups, splits, strict=True):
        if g is None:
            continue
        if seen.setdefault(g, s) != s:
            bad.add(g)
    return bad


@settings(max_examples=40, deadline=None)
@given(grouped_records(), st.sampled_from([0.1, 0.2, 0.3]), st.integers(0, 2**16))
def test_no_group_straddles_and_strata_keep_their_fraction(records, test_fraction, seed) -> None:
    strata, groups = records
    splits = grouped_stratified_assign(strata, groups, {"train": 1 - test_fraction, "test": test_fraction}, seed=seed)
    assert not _straddling(groups, splits)
    totals = Counter(strata)
    test_counts = Counter(k for k, s in zip(strata, splits, strict=True) if s == "test")
    for k, n in totals.items():
        # a greedy over groups of at most 3 images lands within a few images of the target per stratum
        assert abs(test_counts[k] - test_fraction * n) <= 4, (k, n, test_counts[k])
    assert abs(sum(test_counts.values()) - test_fraction * len(strata)) <= 4 + 0.02 * len(strata)


@settings(max_examples=25, deadline=None)
@given(grouped_records(), st.integers(0, 2**16))
def test_generated_three_way_split_is_grouped_and_seeded(records, seed) -> None:
    strata, groups = records
    plan = SplitPlan(test_fraction=0.2, val_fraction=0.15, seed=seed)
    splits, policy = assign_splits([None] * len(strata), strata, groups, plan, group_name="patient_id")
    assert set(splits) <= {"train", "val", "test"}
    assert not _straddling(groups, splits)
    again, _ = assign_splits([None] * len(strata), strata, groups, plan, group_name="patient_id")
    assert again == splits
    assert policy.startswith("generated:test=0.2,val=0.15,seed=") and "group=patient_id" in policy
    n = len(strata)
    assert abs(splits.count("test") - 0.2 * n) <= 4 + 0.03 * n
    assert abs(splits.count("val") - 0.15 * 0.8 * n) <= 4 + 0.03 * n


def test_different_seeds_give_different_splits() -> None:
    strata = [f"c{i % 3}" for i in range(300)]
    groups = [f"p{i // 2}" for i in range(300)]
    a = grouped_stratified_assign(strata, groups, {"train": 0.8, "test": 0.2}, seed=1)
    b = grouped_stratified_assign(strata, groups, {"train": 0.8, "test": 0.2}, seed=2)
    assert a != b


def test_pinned_groups_keep_their_split() -> None:
    strata = ["a"] * 50 + ["b"] * 50
    groups = [f"p{i}" for i in range(100)]
    pinned = {f"p{i}": "test" for i in range(30)}
    out = grouped_stratified_assign(strata, groups, {"train": 0.8, "test": 0.2}, seed=0, pinned=pinned)
    assert all(out[i] == "test" for i in range(30))
    # stratum a is over its test target already (30 > 10): no more a goes to test; b still gets its 10
    assert [out[i] for i in range(30, 50)] == ["train"] * 20
    assert out[50:].count("test") == 10


def test_shipped_split_is_kept_and_val_carved_from_train_only() -> None:
    n = 200
    shipped = ["train"] * 150 + ["test"] * 50
    strata = [f"c{i % 2}" for i in range(n)]
    groups = [f"p{i // 2}" for i in range(n)]
    splits, policy = assign_splits(shipped, strata, groups, SplitPlan(val_fraction=0.2), group_name="pid")
    assert splits[150:] == ["test"] * 50
    assert splits[:150].count("val") == pytest.approx(30, abs=2)
    assert policy.startswith("shipped+val:val=0.2")
    kept, policy = assign_splits(["train"] * 100 + ["val"] * 100, strata, groups, SplitPlan())
    assert kept == ["train"] * 100 + ["val"] * 100 and policy == "shipped"


def test_partial_shipped_split_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="1 of 3 records have no split"):
        assign_splits(["train", None, "test"], ["a", "b", "a"], [None] * 3, SplitPlan())


def test_split_names_and_rarest_strata() -> None:
    assert [normalise_split(x) for x in ("Training", "VALID", "validation", "test")] == [
        "train",
        "val",
        "val",
        "test",
    ]
    with pytest.raises(InvalidInputError, match="unknown split 'holdout'"):
        normalise_split("holdout")
    strata = rarest_label_strata([["effusion", "cardiomegaly"], ["effusion"], [], ["effusion"]])
    assert strata == ["cardiomegaly", "effusion", "<none>", "effusion"]
