"""The extraction pipeline in-process with the tiny random CLIP tower: rows, values, skips, failures, OOM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.adapters.loading import load_adapter
from medprobe.errors import InvalidInputError, NotFoundError
from medprobe.extractor.feature_set import feature_set_row
from medprobe.extractor.pipeline import ExtractOptions, extract
from medprobe.extractor.runner import OutOfMemory
from medprobe.featurestore import store as store_module
from tests.helpers.datasets import make_dataset

MODEL = "tiny-random/clip"


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(MODEL)


def _opts(**kw) -> ExtractOptions:
    base = {"dataset": "toy", "model": MODEL, "workers": 0, "batch_size": 4, "commit_every": 8}
    return ExtractOptions(**{**base, **kw})


def _rows_per_key(store) -> dict[tuple, int]:
    t = store.sql("SELECT feature_set_id, layer, image_hash, count(*) AS n FROM raw_activations GROUP BY ALL")
    return {(f, x, h): n for f, x, h, n in zip(*(t.column(c).to_pylist() for c in range(4)), strict=True)}


def test_extract_commits_every_layer_and_pooling_once_with_the_adapters_values(store, tmp_path, adapter):
    hashes = make_dataset(store, "toy", tmp_path / "img", 21, broken=2)
    summary = extract(store, _opts(pooling=["cls", "mean"]), adapter=adapter, show_progress=False)
    assert summary["images_committed"] == 21 and summary["failures"] == 2
    assert summary["forward_batches"] == 6  # 23 refs in batches of 4; the broken pair shares the last batch
    rows = _rows_per_key(store)
    fs = summary["feature_sets"]
    assert set(rows.values()) == {1}
    assert len(rows) == 2 * 2 * 21  # poolings x layers x images
    # the stored numbers are the adapter's own pooled outputs for one image at a time (fp16 storage)
    uri_of = {h: u for h, u in zip(*store.sql("SELECT image_hash, uri FROM images").to_pydict().values(), strict=True)}
    probe = hashes[:3]
    for pooling in ("cls", "mean"):
        stored = store.read(fs[pooling], 1, probe)
        for i, h in enumerate(probe):
            inputs = adapter.preprocess([Image.open(uri_of[h]).convert("RGB")], None)
            ref = adapter.forward_pooled(inputs, [1], [pooling])[(pooling, 1)][0].numpy()
            np.testing.assert_allclose(stored[i].astype(np.float32), ref, rtol=2e-3, atol=2e-3)
    failures = store.sql("SELECT stage, reason, path, run_id FROM failures").to_pylist()
    assert len(failures) == 2
    assert {f["stage"] for f in failures} == {"extract"} and {f["reason"] for f in failures} == {"not_an_image"}
    assert all("broken" in f["path"] for f in failures) and failures[0]["run_id"] == summary["run_id"]
    run = store.sql("SELECT status, summary FROM runs WHERE run_id = ?", [summary["run_id"]]).to_pylist()[0]
    assert run["status"] == "finished" and json.loads(run["summary"])["images_committed"] == 21


def test_rerun_skips_what_exists_and_a_new_pooling_adds_only_its_rows(store, tmp_path, adapter):
    make_dataset(store, "toy", tmp_path / "img", 10)
    first = extract(store, _opts(pooling=["cls"]), adapter=adapter, show_progress=False)
    again = extract(store, _opts(pooling=["cls"]), adapter=adapter, show_progress=False)
    assert first["images_forwarded"] == 10
    assert again["images_skipped"] == 10 and again["images_forwarded"] == 0 and again["segments"] == 0
    both = extract(store, _opts(pooling=["cls", "mean"]), adapter=adapter, show_progress=False)
    assert both["images_forwarded"] == 10  # every image misses its mean rows
    rows = _rows_per_key(store)
    assert set(rows.values()) == {1} and len(rows) == 2 * 2 * 10  # cls rows were not written twice


def test_split_and_layer_selection(store, tmp_path, adapter):
    make_dataset(store, "toy", tmp_path / "img", 12)  # every 4th image is in the test split
    summary = extract(store, _opts(splits=["test"], layers="-1"), adapter=adapter, show_progress=False)
    assert summary["images_selected"] == 3 and summary["layers"] == [1]
    assert {k[1] for k in _rows_per_key(store)} == {1}


def test_feature_set_id_changes_with_prompt_pooling_and_dtypes(adapter):
    ident = adapter.identity
    base = {"prompt": None, "pooling": "cls", "compute_dtype": "fp32", "storage_dtype": "float16"}
    ids = {feature_set_row(ident, **base).feature_set_id}
    for change in ({"prompt": "x"}, {"pooling": "mean"}, {"compute_dtype": "bf16"}, {"storage_dtype": "float32"}):
        ids.add(feature_set_row(ident, **{**base, **change}).feature_set_id)
    assert len(ids) == 5
    assert feature_set_row(ident, **base).feature_set_id == feature_set_row(ident, **base).feature_set_id


class _OOMAdapter:
    """Wraps an adapter; raises CUDA-style out-of-memory above ``max_batch`` images or on call ``fail_on``."""

    def __init__(self, inner, max_batch: int = 10**9, fail_on: int | None = None) -> None:
        self.inner, self.max_batch, self.fail_on, self.calls = inner, max_batch, fail_on, 0
        self.identity, self.device, self.preprocessor = inner.identity, inner.device, inner.preprocessor

    def check_request(self, layers, poolings):
        self.inner.check_request(layers, poolings)

    def forward_pooled(self, batch, layers, poolings):
        self.calls += 1
        n = batch["pixel_values"].shape[0]
        if n > self.max_batch or self.calls == self.fail_on:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.forward_pooled(batch, layers, poolings)


def test_batch_size_auto_halves_on_out_of_memory(store, tmp_path, adapter):
    make_dataset(store, "toy", tmp_path / "img", 20)
    wrapped = _OOMAdapter(adapter, max_batch=4)
    summary = extract(store, _opts(batch_size="auto"), adapter=wrapped, show_progress=False)  # CPU starts at 16
    assert summary["batch_size"] == 4 and summary["images_committed"] == 20
    assert set(_rows_per_key(store).values()) == {1}


def test_out_of_memory_with_a_fixed_batch_size_is_clear_and_keeps_committed_batches(store, tmp_path, adapter):
    make_dataset(store, "toy", tmp_path / "img", 20)
    wrapped = _OOMAdapter(adapter, fail_on=3)
    with pytest.raises(OutOfMemory, match=r"batch size 4.*smaller --batch-size"):
        extract(store, _opts(commit_every=1000), adapter=wrapped, show_progress=False)
    assert len({k[2] for k in _rows_per_key(store)}) == 8  # the two batches forwarded before the error
    assert store.sql("SELECT status FROM runs").column("status").to_pylist() == ["failed"]


def test_bad_input_errors(store, tmp_path, adapter, monkeypatch):
    make_dataset(store, "toy", tmp_path / "img", 2)
    with pytest.raises(NotFoundError, match=r"unknown dataset 'nope'.*toy"):
        extract(store, _opts(dataset="nope"), adapter=adapter, show_progress=False)
    with pytest.raises(InvalidInputError, match="out of range"):
        extract(store, _opts(layers="7"), adapter=adapter, show_progress=False)
    with pytest.raises(InvalidInputError, match="takes no prompt"):
        extract(store, _opts(prompt="hello"), adapter=adapter, show_progress=False)

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store_module, "write_atomic", refuse)
    with pytest.raises(InvalidInputError, match="read-only"):
        extract(store, _opts(), adapter=adapter, show_progress=False)
