"""Locating requested images through the per-(feature set, layer) index: duplicates, repeats, missing hashes."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medprobe.errors import NotFoundError
from medprobe.featurestore.catalog import Catalog
from medprobe.featurestore.rowindex import SortedKeys, string_keys
from tests.helpers.features import activations, feature_set_row, image_hash, open_with_feature_set

POOL = [image_hash(i) for i in range(40)]
ABSENT = [image_hash(f"absent-{i}") for i in range(5)]


@settings(max_examples=60, deadline=None)
@given(
    width=st.sampled_from([3, 8, 10, 64]),
    keys=st.sets(st.text("ab", min_size=12, max_size=12), min_size=1, max_size=60),
    wanted=st.lists(st.text("ab", min_size=12, max_size=12), max_size=80),
)
def test_sorted_keys_find_matches_a_dict(width, keys, wanted):
    """Keys from a two-letter alphabet share long prefixes: the full-key fallback must still find the right one."""
    stored = sorted({k[:width] for k in keys})
    wanted = [w[:width] for w in wanted] + stored[::-1]
    index = SortedKeys(np.array([k.encode() for k in stored], dtype=f"S{width}"))
    got = index.find(np.array([w.encode() for w in wanted], dtype=f"S{width}"))
    position = {k: i for i, k in enumerate(stored)}
    assert got.tolist() == [position.get(w, -1) for w in wanted]


@st.composite
def commits_and_requests(draw):
    commits = draw(
        st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=15, unique=True), min_size=1, max_size=4)
    )
    committed = sorted({h for c in commits for h in c})
    request = draw(st.lists(st.sampled_from(committed), min_size=1, max_size=40))  # repeats, any order
    missing = draw(st.lists(st.sampled_from(ABSENT), max_size=3))
    spots = draw(st.lists(st.integers(0, len(request)), min_size=len(missing), max_size=len(missing)))
    return commits, request, missing, spots


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=commits_and_requests())
def test_index_locate_keeps_the_smallest_segment_and_names_missing_hashes(url_factory, case):
    commits, request, missing, spots = case
    hidden = 8
    store = open_with_feature_set(url_factory(), feature_set_row("fs", n_layers=2, hidden=hidden))
    winner: dict[str, tuple[str, int, int]] = {}  # image -> (segment id, row, salt) that readers must see
    for salt, hashes in enumerate(commits):
        sid = store.commit_segment("fs", hashes, {layer: activations(hashes, layer, hidden, salt) for layer in (0, 1)})
        for row, h in enumerate(hashes):
            if h not in winner or sid < winner[h][0]:
                winner[h] = (sid, row, salt)
    with mock.patch.object(Catalog, "register_temp", side_effect=AssertionError("no SQL join for hash lists")):
        located = store.locate("fs", [0, 1], request)
        for layer in (0, 1):
            assert located[layer].column("segment_id").to_pylist() == [winner[h][0] for h in request]
            assert located[layer].column("row").to_pylist() == [winner[h][1] for h in request]
        want = np.stack([activations([h], 1, hidden, winner[h][2])[0] for h in request]).astype(np.float16)
        np.testing.assert_array_equal(store.read("fs", 1, pa.array(request)), want)
        np.testing.assert_array_equal(store.read_layers("fs", [1, 0], request)[1], want)
        if missing:
            asked = list(request)
            for h, at in zip(missing, spots, strict=True):
                asked.insert(at, h)
            first_absent = next(h for h in asked if h in ABSENT)
            with pytest.raises(NotFoundError, match=f"{len(missing)} of {len(asked)} requested images.*{first_absent}"):
                store.read("fs", 0, asked)
    # the index agrees with the deduplicated SQL view
    view = store.sql("SELECT image_hash, segment_id, row FROM activations WHERE feature_set_id = 'fs' AND layer = 0")
    expect = dict(zip(view.column("image_hash").to_pylist(), view.column("segment_id").to_pylist(), strict=True))
    assert expect == {h: w[0] for h, w in winner.items()}


def test_index_is_rebuilt_when_a_commit_adds_a_fragment(store_url):
    store = open_with_feature_set(store_url)
    first = [image_hash(i) for i in range(5)]
    store.commit_segment("fs-test", first, {0: activations(first, 0, 16)})
    with pytest.raises(NotFoundError, match="1 of 2 requested images"):
        store.read("fs-test", 0, [first[0], image_hash(7)])
    store.commit_segment("fs-test", [image_hash(7)], {0: activations([image_hash(7)], 0, 16, salt=1)})
    x = store.read("fs-test", 0, [image_hash(7), first[0]])
    np.testing.assert_array_equal(x[0], activations([image_hash(7)], 0, 16, salt=1)[0].astype(np.float16))


def test_hashes_of_other_lengths_use_the_arrow_lookup(store_url):
    store = open_with_feature_set(store_url)
    names = ["a", "bb", "ccc", "dddd"]
    store.commit_segment("fs-test", names, {0: activations([image_hash(n) for n in names], 0, 16)})
    np.testing.assert_array_equal(store.read("fs-test", 0, ["ccc", "a"]), store.read("fs-test", 0)[[2, 0]])
    with pytest.raises(NotFoundError, match="first: zz"):
        store.read("fs-test", 0, ["a", "zz"])
    assert string_keys(pa.array(names)).dtype == object
