"""``medprobe search``: exact neighbours, the stored index reused until rows are added, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medprobe.featurestore import FeatureStore, build_index, stored_index
from tests.helpers.cli import run_cli
from tests.helpers.features import fill_store


def _search(capsys, store: FeatureStore, *args: str) -> dict:
    code, out, err = run_cli(capsys, "search", "--feature-set", "fs-synth", "-f", "json", "--store", store.url, *args)
    assert code == 0, err
    return json.loads(out)


def _brute_force(store: FeatureStore, layer: int, query_hash: str, k: int) -> list[str]:
    hashes = store.sql("SELECT image_hash FROM activations WHERE feature_set_id = 'fs-synth' AND layer = ?",
                       [layer]).column(0).to_pylist()  # fmt: skip
    X = store.read("fs-synth", layer, hashes).astype(np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    q = X[hashes.index(query_hash)]
    sims = X @ q
    order = [hashes[i] for i in np.argsort(-sims, kind="stable") if hashes[i] != query_hash]
    return order[:k]


def test_search_returns_exact_neighbours_and_reuses_the_stored_index(synth_store, capsys):
    store = synth_store
    query = store.sql("SELECT image_hash FROM dataset_images ORDER BY image_hash LIMIT 1").column(0)[0].as_py()
    first = _search(capsys, store, "--hash", query, "-l", "2", "--k", "7")
    ids = list(dict.fromkeys(n["image_hash"] for n in first["neighbours"]))
    assert ids == _brute_force(store, 2, query, 7)
    sims = [n["similarity"] for n in first["neighbours"]]
    assert sims == sorted(sims, reverse=True) and query not in ids
    assert first["index"]["kind"] == "exact" and first["index"]["built"] is True
    assert {"dataset", "split", "labels", "distance"} <= set(first["neighbours"][0])
    assert sum(first["label_mix"]["grade"].values()) == 7
    again = _search(capsys, store, "--hash", query, "-l", "2", "--k", "7")
    assert again["index"]["built"] is False and again["neighbours"] == first["neighbours"]
    # the store's index and a fresh one give the same top-k
    kept, fresh = stored_index(store, "fs-synth", 2), build_index(store, "fs-synth", 2)
    X = store.read("fs-synth", 2, [query])
    assert kept.built is False
    np.testing.assert_array_equal(kept.search(X, 10)[1], fresh.search(X, 10)[1])
    # new rows -> a new index (the old one removed); no new rows -> none built
    fill_store(store, n=260, fs_id="fs-synth", seed=0)
    store.refresh()
    after = _search(capsys, store, "--hash", query, "-l", "2", "--k", "7")
    assert after["index"]["built"] is True and after["index"]["state"] != first["index"]["state"]
    assert [n["image_hash"] for n in after["neighbours"]][:7] == _brute_force(store, 2, query, 7)
    folder = store.loc.path("indexes", "fs-synth", "2")
    assert len(store.loc.fs.ls(folder)) == 3  # one index, its row list and its checksum


def test_a_corrupted_index_is_found_by_verify_and_rebuilt_by_search(synth_store, capsys):
    """The hostile check: a corrupted FAISS file gave wrong neighbours with exit 0 and verify said OK."""
    store = synth_store
    query = store.sql("SELECT image_hash FROM dataset_images ORDER BY image_hash LIMIT 1").column(0)[0].as_py()
    first = _search(capsys, store, "--hash", query, "-l", "1", "--k", "5")
    base = store.loc.path("indexes", "fs-synth", "1", first["index"]["state"])
    with open(base + ".faiss", "r+b") as f:  # still a valid index, other vectors: wrong neighbours if trusted
        f.seek(-4000, 2)
        data = bytearray(f.read())
        f.seek(-4000, 2)
        f.write(bytes(b ^ 0x5A for b in data))
    code, out, _ = run_cli(capsys, "store", "verify", "--store", store.url)
    assert code == 4 and "do not match its checksum" in out
    code, out, err = run_cli(capsys, "search", "--feature-set", "fs-synth", "-f", "json", "--store", store.url,
                             "--hash", query, "-l", "1", "--k", "5")  # fmt: skip
    assert code == 0 and "cannot be trusted" in err and "rebuilding" in err, err
    again = json.loads(out)
    assert again["index"]["built"] is True and again["neighbours"] == first["neighbours"]
    assert [n["image_hash"] for n in again["neighbours"]][:5] == _brute_force(store, 1, query, 5)
    code, _, err = run_cli(capsys, "store", "verify", "--store", store.url)
    assert code == 0, err
    Path(base + ".sha256").write_text("0" * 64)  # a damaged checksum: quarantine moves the index aside
    code, out, _ = run_cli(capsys, "store", "quarantine", "-f", "json", "--store", store.url)
    assert code == 0 and any(m["from"].endswith(".faiss") for m in json.loads(out)["moved"])
    code, _, err = run_cli(capsys, "store", "verify", "--store", store.url)
    assert code == 0, err


def test_search_bad_queries(synth_store, capsys, tmp_path):
    url = synth_store.url
    junk = tmp_path / "scan.png"
    junk.write_bytes(b"not an image at all")
    cases = [
        (["--image", str(junk)], "scan.png"),
        (["--image", str(tmp_path / "missing.png")], "missing.png"),
        (["--hash", "0" * 64], "has no features in feature set fs-synth"),
        ([], "--image PATH or --image-hash"),
        (["--hash", "0" * 64, "--image", str(junk)], "one of them"),
    ]
    query = synth_store.sql("SELECT image_hash FROM dataset_images LIMIT 1").column(0)[0].as_py()
    cases.append((["--hash", query, "--k", "100000"], "choose k from 1 to"))
    for args, message in cases:
        code, _, err = run_cli(capsys, "search", "--feature-set", "fs-synth", "--store", url, *args)
        assert code != 0 and message in err, (args, err)


@pytest.mark.parametrize("n", [1, 5])
def test_index_of_few_rows(store: FeatureStore, n: int) -> None:
    fill_store(store, n=max(n, 12))
    ix = build_index(store, "fs-synth", 0)
    assert len(ix.hashes) == max(n, 12) and ix.index.ntotal == len(ix.hashes)


def test_search_with_a_new_image_runs_the_feature_sets_model(store, tmp_path, capsys):
    from PIL import Image

    from medprobe.extractor.pipeline import ExtractOptions, extract
    from tests.helpers.datasets import make_dataset

    make_dataset(store, "toy", tmp_path / "img", 12)
    options = ExtractOptions.model_validate({"dataset": "toy", "model": "tiny-random/clip", "workers": 0,
                                             "storage_dtype": "float32"})  # fmt: skip
    extract(store, options, show_progress=False)
    fs = store.table("feature_sets").column("feature_set_id")[0].as_py()
    stored = store.sql("SELECT image_hash FROM dataset_images ORDER BY image_hash").column(0).to_pylist()
    # a stored file given by path uses its stored row: the same neighbours as --hash
    path = next(p for p in sorted((tmp_path / "img").iterdir()))
    by_path = json.loads(run_cli(capsys, "search", "--feature-set", fs, "--image", str(path), "-f", "json",
                                 "--store", store.url)[1])  # fmt: skip
    assert by_path["query"]["features_from"] == "store"
    # a new file: decoded and run through tiny-random/clip; its vector equals what extract would have stored
    new = tmp_path / "new.png"
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(new)
    code, out, err = run_cli(capsys, "search", "--feature-set", fs, "--image", str(new), "--k", "3", "-f", "json",
                             "--store", store.url)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["query"]["features_from"] == "model" and len(doc["neighbours"]) == 3
    assert {n["image_hash"] for n in doc["neighbours"]} <= set(stored)
    from medprobe.extractor.single import embed_file

    layer = doc["layer"]
    from tests.helpers.datasets import add_image_files

    add_image_files(store, "one", [(new, "test")])
    extract(store, ExtractOptions.model_validate({"dataset": "one", "model": "tiny-random/clip", "workers": 0,
                                                  "storage_dtype": "float32"}), show_progress=False)  # fmt: skip
    store.refresh()
    h = store.sql("SELECT image_hash FROM dataset_images WHERE dataset = 'one'").column(0)[0].as_py()
    np.testing.assert_allclose(embed_file(store.feature_set(fs), layer, str(new)), store.read(fs, layer, [h])[0],
                               atol=1e-5)  # fmt: skip
