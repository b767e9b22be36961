"""extract --tokens: token rows in the model's grid order, their mean equal to the pooled rows, kill and resume,
a byte-bounded buffer over 10,000 images, and the refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medprobe
from medprobe.adapters.loading import load_adapter
from medprobe.errors import InvalidInputError
from medprobe.extractor import pipeline
from medprobe.featurestore import FeatureStore
from medprobe.featurestore.fragments import list_fragments
from medprobe.featurestore.maintenance import verify_store
from tests.helpers.datasets import make_dataset

# model, pooled equivalent of the grid, layer, prompt
MODELS = [("tiny-random/timm-vit", "image_mean", 1, None), ("tiny-random/timm-convnext", "spatial_mean", 1, None),
          ("tiny-random/llava", "image_mean", 2, "Describe the image.")]  # fmt: skip


def _grid(store: FeatureStore, fs_id: str, layer: int) -> dict:
    return json.loads(store.feature_set(fs_id).token_grid)[str(layer)]


@pytest.mark.parametrize(("model", "pooling", "layer", "prompt"), MODELS)
def test_the_grid_mean_of_the_stored_tokens_is_the_stored_pooled_row(
    tmp_path: Path, model: str, pooling: str, layer: int, prompt: str | None
) -> None:
    store = FeatureStore.open(str(tmp_path / "store"))
    hashes = make_dataset(store, "toy", tmp_path / "img", 6, size=40)
    result = medprobe.extract(dataset="toy", model=model, layers=str(layer), pooling=pooling, tokens=True,
                              prompt=prompt, storage_dtype="float32", no_progress=True, store=store)  # fmt: skip
    pooled_fs, tokens_fs = result.feature_sets[pooling], result.feature_sets["tokens"]
    grid = _grid(store, tokens_fs, layer)
    tokens = store.read(tokens_fs, layer, hashes).reshape(len(hashes), -1, grid["hidden"])
    assert tokens.shape[1] == grid["n_prefix"] + grid["rows"] * grid["cols"]
    pooled = store.read(pooled_fs, layer, hashes)
    # the model's own pooling (on the device) against the mean of the stored grid tokens (prefix tokens left out)
    np.testing.assert_allclose(tokens[:, grid["n_prefix"] :].astype(np.float64).mean(1), pooled, rtol=1e-5, atol=1e-5)


def _bright_cells(model: str, prompt: str | None) -> tuple[set[tuple[int, int]], tuple[int, int]]:
    """The grid cells a bright square covers (at least half of each, read off the model input itself) and the cell
    whose tokens change most at layer 0."""
    adapter = load_adapter(model)
    dark = np.zeros((64, 64, 3), dtype=np.uint8)
    bright = dark.copy()
    bright[48:60, 4:16] = 255  # low on the left
    batches = [adapter.preprocess([Image.fromarray(a)], prompt) for a in (dark, bright)]
    grid = adapter.token_grids(batches[0])[0]
    changed = (batches[1]["pixel_values"] - batches[0]["pixel_values"])[0].abs().sum(0).numpy()
    lit = changed > changed.max() / 2
    h, w = lit.shape
    cells = {(r, c) for r in range(grid.rows) for c in range(grid.cols)
             if lit[r * h // grid.rows : (r + 1) * h // grid.rows, c * w // grid.cols : (c + 1) * w // grid.cols].mean()
             >= 0.5}  # fmt: skip
    rows = [adapter.forward_pooled(b, [0], ["tokens"])[("tokens", 0)][0] for b in batches]
    change = (rows[1] - rows[0]).reshape(-1, grid.hidden)[grid.n_prefix :].norm(dim=1)
    peak = int(torch.argmax(change))
    return cells, (peak // grid.cols, peak % grid.cols)


@pytest.mark.parametrize(("model", "prompt"), [(m, p) for m, _, _, p in MODELS])
def test_token_order_is_the_models_grid_order(model: str, prompt: str | None) -> None:
    cells, changed = _bright_cells(model, prompt)
    assert cells and changed in cells, (cells, changed)


def test_refusals(tmp_path: Path) -> None:
    store = FeatureStore.open(str(tmp_path / "store"))
    make_dataset(store, "toy", tmp_path / "img", 3)
    with pytest.raises(InvalidInputError, match=r"layer\(s\) \[2\] of tiny-random/timm-vit have no token grid"):
        medprobe.extract(dataset="toy", model="tiny-random/timm-vit", layers="-1", tokens=True, store=store)
    for model, why in (("tiny-random/idefics2", "perceiver latents"), ("tiny-random/mllama", "cross-attends"),
                       ("tiny-random/llava-next", "tiles")):  # fmt: skip
        with pytest.raises(InvalidInputError, match=why):
            medprobe.extract(dataset="toy", model=model, prompt="Describe.", tokens=True, store=store)
    with pytest.raises(InvalidInputError, match=r"--max-bytes 1\.0 KB: this extraction would write .* \(3 images"):
        medprobe.extract(dataset="toy", model="tiny-random/timm-vit", layers="0", tokens=True, max_bytes="1K",
                         store=store)  # fmt: skip
    assert store.sql("SELECT count(*) FROM activations").column(0)[0].as_py() == 0  # nothing written
    medprobe.extract(dataset="toy", model="tiny-random/timm-vit", layers="0", tokens=True, max_bytes="1M",
                     no_progress=True, store=store)  # fmt: skip
    tokens_fs = store.sql("SELECT feature_set_id FROM feature_sets WHERE pooling = 'tokens'").column(0)[0].as_py()
    with pytest.raises(InvalidInputError, match="holds token grids"):
        medprobe.train(task="label", feature_set=tokens_fs, store=store)


CMD = [sys.executable, "-m", "medprobe.cli.main", "extract", "--dataset", "toy", "--model", "tiny-random/timm-vit",
       "--layers", "0,1", "--pooling", "image_mean", "--tokens", "--batch-size", "2", "--commit-every", "4",
       "--decode-workers", "0", "--no-progress"]  # fmt: skip


def test_token_rows_survive_kill_and_resume(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    n = 120
    make_dataset(store, "toy", tmp_path / "img", n)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    kills = 0
    for wait_for in (2, 6):
        before = len(list_fragments(store.loc, "activations"))
        proc = subprocess.Popen([*CMD, "--store", url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list_fragments(store.loc, "activations")) >= before + wait_for:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.02)
        proc.wait()
    assert kills >= 1, "the extraction finished before it could be killed; make the dataset larger"
    out = subprocess.run([*CMD, "--store", url], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    store.refresh()
    dup = store.sql("SELECT count(*) FROM (SELECT feature_set_id, layer, image_hash FROM raw_activations GROUP BY ALL "
                    "HAVING count(*) > 1)").column(0)[0].as_py()  # fmt: skip
    assert dup == 0
    per_fs = store.sql("SELECT f.pooling, count(*) AS n FROM activations a JOIN feature_sets f USING (feature_set_id) "
                       "GROUP BY 1").to_pylist()  # fmt: skip
    assert {r["pooling"]: r["n"] for r in per_fs} == {"image_mean": 2 * n, "tokens": 2 * n}
    report = verify_store(store)  # every token segment's chunks read back against their checksums
    assert report.ok and report.rows_checked >= 4 * n, report.problems
    # the resumed token rows are the rows a clean extraction writes
    clean = FeatureStore.open(str(tmp_path / "clean"))
    hashes = make_dataset(clean, "toy", tmp_path / "img2", n)
    again = medprobe.extract(dataset="toy", model="tiny-random/timm-vit", layers="1", pooling="image_mean", tokens=True,
                             no_progress=True, store=clean)  # fmt: skip
    fs = again.feature_sets["tokens"]
    np.testing.assert_array_equal(store.read(fs, 1, hashes[:20]), clean.read(fs, 1, hashes[:20]))


def test_a_10000_image_token_extraction_keeps_its_buffer_under_the_byte_bound(tmp_path: Path, monkeypatch) -> None:
    """The committer holds at most TOKEN_BUFFER_BYTES of token rows: segments are cut by bytes, and the Python heap
    (numpy buffers: tracemalloc) stays far below what the whole extraction writes."""
    bound = 2 * 2**20
    monkeypatch.setattr(pipeline, "TOKEN_BUFFER_BYTES", bound)
    store = FeatureStore.open(str(tmp_path / "store"))
    n = 10_000
    make_dataset(store, "big", tmp_path / "img", n, size=8)
    tracemalloc.start()
    try:
        result = medprobe.extract(dataset="big", model="tiny-random/timm-convnext", layers="0", tokens=True,
                                  batch_size=64, commit_every=100_000, decode_workers=0, no_progress=True,
                                  store=store)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tokens_fs = result.feature_sets["tokens"]
    row_bytes = store.feature_set(tokens_fs).hidden_sizes[0] * 2  # float16 on disk
    written = n * row_bytes
    per_segment = store.sql("SELECT segment_id, count(*) AS n FROM activations WHERE feature_set_id = ? GROUP BY 1",
                            [tokens_fs]).column("n").to_pylist()  # fmt: skip
    assert sum(per_segment) == n
    # rows are buffered as float32 on the host; a flush may overshoot by one batch (64 images)
    assert max(per_segment) <= bound // (row_bytes * 2) + 64 < n // 10
    assert written > 50 * 2**20 and peak < 32 * 2**20, (written, peak)
