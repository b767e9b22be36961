"""Bad input and the store commands: format versions, broken chunks, unknown names, export, info, gc."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest

from medprobe.errors import NotFoundError, StoreFormatError
from medprobe.featurestore import FeatureStore
from medprobe.featurestore.maintenance import verify_store
from medprobe.schemas import FORMAT_VERSION, DatasetImageRow
from tests.helpers.cli import run_cli
from tests.helpers.features import activations, feature_set_row, image_hash, open_with_feature_set

HASHES = [image_hash(i) for i in range(10)]


@pytest.fixture
def two_segments(store_url):
    store = open_with_feature_set(store_url)
    a = store.commit_segment(
        "fs-test", HASHES[:5], {0: activations(HASHES[:5], 0, 16), 1: activations(HASHES[:5], 1, 16)}
    )
    b = store.commit_segment(
        "fs-test", HASHES[5:], {0: activations(HASHES[5:], 0, 16), 1: activations(HASHES[5:], 1, 16)}
    )
    return store, a, b


def test_newer_format_version_is_refused_naming_both(store_url, capsys):
    FeatureStore.open(store_url).close()
    fs, root = fsspec.core.url_to_fs(store_url)
    fs.pipe_file(f"{root}/medprobe.json", json.dumps({"format_version": FORMAT_VERSION + 1}).encode())
    with pytest.raises(StoreFormatError, match=rf"format version {FORMAT_VERSION + 1}.*version {FORMAT_VERSION}"):
        FeatureStore.open(store_url)
    code, _, err = run_cli(capsys, "store", "info", "--store", store_url)
    assert code != 0 and f"format version {FORMAT_VERSION + 1}" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_verify_names_the_broken_segment_and_the_rest_still_reads(two_segments, damage, capsys):
    store, broken, _ = two_segments
    fs = store.loc.fs
    layer_dir = store.loc.path("segments", broken, "layer_0001")
    chunk = next(f for f in sorted(fs.find(layer_dir)) if not f.endswith("zarr.json"))
    data = fs.cat_file(chunk)
    if damage == "delete":
        fs.rm(chunk)
    elif damage == "truncate":
        fs.pipe_file(chunk, data[: len(data) // 2])
    else:
        fs.pipe_file(chunk, data[:10] + bytes([data[10] ^ 1]) + data[11:])
    quick = verify_store(store, read_data=False)  # sizes only: finds missing and truncated chunks, not bit flips
    assert len(quick.problems) == (0 if damage == "flip" else 1)
    report = verify_store(store)
    assert len(report.problems) == 1
    assert broken in report.problems[0] and "fs-test" in report.problems[0] and "layer 1" in report.problems[0]
    code, out, _ = run_cli(capsys, "store", "verify", "--store", store.url)
    assert code != 0 and broken in out and "feature set fs-test" in out
    # everything else still reads: the other segment, and the other layer of the broken one
    np.testing.assert_array_equal(
        store.read("fs-test", 1, HASHES[5:]), activations(HASHES[5:], 1, 16).astype(np.float16)
    )
    np.testing.assert_array_equal(store.read("fs-test", 0), activations(sorted(HASHES), 0, 16).astype(np.float16))
    with pytest.raises(Exception, match=broken):
        store.read("fs-test", 1, HASHES[:2])


def test_unknown_feature_set_and_layer_list_what_exists(two_segments, tmp_path, capsys):
    store, _, _ = two_segments
    store.register_feature_set(feature_set_row("fs-other"))
    with pytest.raises(NotFoundError, match=r"unknown feature set 'nope'.*fs-other.*fs-test"):
        store.read("nope", 0, HASHES)
    with pytest.raises(NotFoundError, match=r"no rows for layer 3; stored layers: \[0, 1\]"):
        store.read("fs-test", 3, HASHES)
    with pytest.raises(NotFoundError, match=r"no rows for layer 3; stored layers: \[0, 1\]"):
        store.read("fs-test", 3)
    with pytest.raises(NotFoundError, match=r"1 of 2 requested images have no activations"):
        store.read("fs-test", 0, [HASHES[0], image_hash("missing")])
    code, _, err = run_cli(
        capsys,
        "export",
        "--feature-set",
        "nope",
        "--layer",
        "0",
        "--out",
        str(tmp_path / "x.npz"),
        "--store",
        store.url,
    )
    assert code != 0 and "unknown feature set 'nope'" in err and "fs-test" in err


def test_export_npz(two_segments, tmp_path, capsys):
    store, _, _ = two_segments
    splits = ["train", "test"] * 5
    store.append(
        "dataset_images",
        [
            DatasetImageRow(dataset="knee", image_hash=h, split=s, source_path=f"{i}.png", labels="{}")
            for i, (h, s) in enumerate(zip(HASHES, splits, strict=True))
        ],
    )
    out = tmp_path / "all.npz"
    code, _, err = run_cli(
        capsys, "export", "--feature-set", "fs-test", "--layer", "1", "--out", str(out), "--store", store.url
    )
    assert code == 0, err
    with np.load(out) as z:
        assert list(z["image_hash"]) == sorted(HASHES)
        np.testing.assert_array_equal(z["X"], activations(sorted(HASHES), 1, 16).astype(np.float16))
    out = tmp_path / "test.npz"
    code, _, err = run_cli(
        capsys,
        "export",
        "--feature-set",
        "fs-test",
        "--layer",
        "0",
        "--dataset",
        "knee",
        "--split",
        "test",
        "--out",
        str(out),
        "--store",
        store.url,
    )
    assert code == 0, err
    with np.load(out) as z:
        want = sorted(h for h, s in zip(HASHES, splits, strict=True) if s == "test")
        assert list(z["image_hash"]) == want and set(z["split"]) == {"test"}
        np.testing.assert_array_equal(z["X"], activations(want, 0, 16).astype(np.float16))
    code, _, err = run_cli(
        capsys,
        "export",
        "--feature-set",
        "fs-test",
        "--layer",
        "0",
        "--dataset",
        "nope",
        "--out",
        str(out),
        "--store",
        store.url,
    )
    assert code != 0 and "unknown dataset 'nope'" in err and "knee" in err


def test_info_and_gc_commands(two_segments, capsys):
    store, _, _ = two_segments
    code, out, _ = run_cli(capsys, "store", "info", "--store", store.url)
    assert code == 0 and "activations" in out and "fs-test" in out
    code, out, _ = run_cli(capsys, "store", "gc", "--store", store.url, "--grace", "1h", "--dry-run")
    assert code == 0 and "would remove 0 uncommitted segment(s)" in out and "kept 2 committed" in out
    code, _, err = run_cli(capsys, "store", "gc", "--store", store.url, "--grace", "0s")
    assert code != 0 and "shorter than the minimum 15m" in err
    code, _, err = run_cli(capsys, "store", "gc", "--store", store.url, "--grace", "soon")
    assert code != 0 and "cannot read duration 'soon'" in err
    code, _, err = run_cli(capsys, "store", "verify", "--store", store.url + "-absent")
    assert code != 0 and "no medprobe store" in err
