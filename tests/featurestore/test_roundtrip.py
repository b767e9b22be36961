"""Round trips: what is committed reads back bit-exact, in the requested order, through every read path."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medprobe.featurestore import segments
from medprobe.featurestore.segments import from_bfloat16_bits, to_bfloat16_bits
from tests.helpers.features import activations, feature_set_row, image_hash, open_with_feature_set, stored

POOL = [image_hash(i) for i in range(24)]
DTYPES = ["float16", "bfloat16", "float32"]


@st.composite
def scenarios(draw):
    hidden = draw(st.integers(1, 40))
    layers = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True))
    dtype = draw(st.sampled_from(DTYPES))
    commits = draw(
        st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=12, unique=True), min_size=1, max_size=3)
    )
    committed = sorted({h for c in commits for h in c})
    request = draw(st.lists(st.sampled_from(committed), min_size=1, max_size=30))  # repeats, any order, subsets
    chunk_bytes = draw(st.sampled_from([2, 64, 300, 4 * 2**20]))  # 1 row per chunk .. everything in one chunk
    batch_rows = draw(st.integers(1, 8))
    return hidden, layers, dtype, commits, request, chunk_bytes, batch_rows


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_every_read_path_returns_the_committed_rows(url_factory, scenario):
    hidden, layers, dtype, commits, request, chunk_bytes, batch_rows = scenario
    store = open_with_feature_set(url_factory(), feature_set_row("fs", n_layers=4, hidden=hidden, storage_dtype=dtype))
    winner: dict[str, tuple[str, int]] = {}  # image -> (segment id, commit index) that readers must see
    with mock.patch.object(segments, "CHUNK_BYTES", chunk_bytes):
        for salt, hashes in enumerate(commits):
            arrays = {layer: activations(hashes, layer, hidden, salt) for layer in layers}
            sid = store.commit_segment("fs", hashes, arrays, dtype=dtype)
            for h in hashes:
                if h not in winner or sid < winner[h][0]:
                    winner[h] = (sid, salt)

    def expected(hashes: list[str], layer: int) -> np.ndarray:
        rows = [activations([h], layer, hidden, winner[h][1])[0] for h in hashes]
        return stored(np.stack(rows), dtype)

    out_dtype = np.float16 if dtype == "float16" else np.float32
    for layer in layers:
        x = store.read("fs", layer, request)
        assert x.dtype == out_dtype and x.shape == (len(request), hidden)
        np.testing.assert_array_equal(x, expected(request, layer))
        everything = store.read("fs", layer)  # default: every stored image in image_hash order
        np.testing.assert_array_equal(everything, expected(sorted(winner), layer))
        batches = list(store.iter_batches("fs", layer, request, batch_rows=batch_rows))
        assert [h for b, _ in batches for h in b] == request
        assert all(len(b) <= batch_rows for b, _ in batches)
        np.testing.assert_array_equal(np.concatenate([x for _, x in batches]), x)
        sql = (
            f"SELECT image_hash FROM activations WHERE feature_set_id = 'fs' AND layer = {layer} "
            "ORDER BY image_hash DESC"
        )
        np.testing.assert_array_equal(store.read("fs", layer, sql=sql), expected(sorted(winner, reverse=True), layer))
    by_layer = store.read_layers("fs", layers, request)
    assert sorted(by_layer) == sorted(layers)
    for layer in layers:
        np.testing.assert_array_equal(by_layer[layer], expected(request, layer))
    # exactly one visible row per (feature set, layer, image); every written row is in the raw table
    counts = store.sql("SELECT layer, image_hash, count(*) AS n FROM activations GROUP BY ALL")
    assert set(counts.column("n").to_pylist()) == {1}
    assert counts.num_rows == len(layers) * len(winner)
    assert store.sql("SELECT count(*) FROM raw_activations").column(0)[0].as_py() == len(layers) * sum(
        len(c) for c in commits
    )
    store.close()


@pytest.mark.parametrize("dtype", DTYPES)
def test_segments_stay_plain_zarr(store_url, dtype):
    """zarr itself reads a segment and finds the same numbers (the store is not a private format)."""
    store = open_with_feature_set(store_url, feature_set_row("fs", n_layers=2, hidden=24, storage_dtype=dtype))
    hashes = [image_hash(i) for i in range(37)]
    x = activations(hashes, 1, 24)
    with mock.patch.object(segments, "CHUNK_BYTES", 400):
        sid = store.commit_segment("fs", hashes, {1: x}, dtype=dtype)
    group = zarr.open_group(segments._zarr_store(store.loc, segments.segment_path(store.loc, sid), True), mode="r")
    raw = group["layer_0001"][...]
    got = from_bfloat16_bits(raw) if dtype == "bfloat16" else raw
    np.testing.assert_array_equal(got, stored(x, dtype))
    assert group.attrs["storage_dtype"] == dtype and group.attrs["n_rows"] == 37
    assert store.segments.image_hashes(sid) == hashes


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_bfloat16_rounds_to_nearest_even(values):
    """Each value becomes the nearer of its two bfloat16 neighbours; a tie goes to the even one."""
    x = np.asarray(values, dtype=np.float32)
    got = from_bfloat16_bits(to_bfloat16_bits(x))
    bits = x.view(np.uint32)
    top = (bits >> 16).astype(np.int64)  # truncation toward zero; top + 1 is the neighbour away from zero

    def value(t: np.ndarray) -> np.ndarray:  # bfloat16 bits -> exact float64 (exponent 255 read as 2**128)
        sign = np.where(t & 0x8000, -1.0, 1.0)
        exp, man = (t >> 7) & 0xFF, t & 0x7F
        return sign * np.where(exp == 0, man / 128 * 2.0**-126, (1 + man / 128) * 2.0 ** (exp - 127))

    down, up = value(top), value(top + 1)
    err_down, err_up = np.abs(x - down), np.abs(up - x)
    tie_to_down = (err_down == err_up) & ((top & 1) == 0)
    want = np.where((err_down < err_up) | tie_to_down, down, up)
    want = np.where(np.abs(want) >= 2.0**128, np.copysign(np.inf, want), want)  # past the largest: infinity
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert (to_bfloat16_bits(x) == (got.view(np.uint32) >> 16)).all()


def test_duplicate_commit_keeps_the_first_segment(store_url):
    store = open_with_feature_set(store_url)
    hashes = [image_hash(i) for i in range(5)]
    first = store.commit_segment("fs-test", hashes, {0: np.zeros((5, 16))})
    store.commit_segment("fs-test", hashes[::-1], {0: np.ones((5, 16))})
    assert (store.read("fs-test", 0, hashes) == 0).all()
    assert set(store.table("activations").column("segment_id").to_pylist()) == {first}
    assert store.table("activations").num_rows == 5


def test_reads_see_new_commits_and_default_batches_cover_everything(store_url):
    """The located-rows cache is dropped when a commit adds a manifest fragment (also from another process)."""
    store = open_with_feature_set(store_url)
    first = [image_hash(i) for i in range(6)]
    store.commit_segment("fs-test", first, {0: activations(first, 0, 16)})
    assert store.read("fs-test", 0).shape == (6, 16)
    other = open_with_feature_set(store_url)  # a second handle stands in for another writer
    more = [image_hash(i) for i in range(4, 12)]
    other.commit_segment("fs-test", more, {0: activations(more, 0, 16, salt=1)})
    everything = sorted(set(first) | set(more))
    want = {h: activations([h], 0, 16, salt=0 if h in first else 1)[0] for h in everything}
    np.testing.assert_array_equal(store.read("fs-test", 0), np.stack([want[h] for h in everything]).astype(np.float16))
    np.testing.assert_array_equal(
        store.read("fs-test", 0, more[::-1]), np.stack([want[h] for h in more[::-1]]).astype(np.float16)
    )
    with mock.patch.object(segments, "CHUNK_BYTES", 64):
        store.commit_segment("fs-test", [image_hash(99)], {0: activations([image_hash(99)], 0, 16)})
    batches = list(store.iter_batches("fs-test", 0, batch_rows=5))
    got = [h for b, _ in batches for h in b]
    assert sorted(got) == sorted([*everything, image_hash(99)]) and len(got) == len(set(got))
    x = np.concatenate([x for _, x in batches])
    np.testing.assert_array_equal(x, store.read("fs-test", 0, got))
