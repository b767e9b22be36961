"""`medprobe extract` end to end as a user runs it: real EfficientNet-Lite0 weights on shared knee radiographs,
and a tiny random LLaVA with a prompt preset."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from medprobe.featurestore import FeatureStore
from tests.helpers.cli import run_subprocess
from tests.helpers.datasets import KNEE, add_knee_images, make_dataset

ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return run_subprocess(args, env=ENV, timeout=300)


@pytest.mark.skipif(not KNEE.is_dir(), reason="needs ../shared/data/knee-oa-kl (the shared data folder)")
def test_efficientnet_lite0_extracts_the_shared_knee_images(tmp_path):
    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    hashes = add_knee_images(store, "knee", 50)
    out = _run(["extract", "--store", url, "--dataset", "knee", "--model", "efficientnet-lite0", "--batch-size", "16",
                "--decode-workers", "1", "--no-progress"])  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "images committed" in out.stdout and "forward s" in out.stdout
    store.refresh()
    run = store.sql("SELECT status, summary FROM runs WHERE kind = 'extract'").to_pylist()[0]
    summary = json.loads(run["summary"])
    assert run["status"] == "finished" and summary["images_committed"] == 50 and summary["failures"] == 0
    fs_id = summary["feature_sets"]["spatial_mean"]
    assert store.layers(fs_id) == list(range(17))
    x = store.read(fs_id, 16, hashes).astype(np.float32)  # the usual 1,280-d pooled feature
    assert x.shape == (50, 1280) and np.isfinite(x).all()
    assert (x >= 0).all() and (x <= 6).all()  # after ReLU6
    assert np.linalg.matrix_rank(x) > 40  # distinct images give distinct features
    assert store.read(fs_id, 0, hashes).shape == (50, 16)
    fset = store.feature_set(fs_id)
    assert fset.adapter.startswith("efficientnet") and fset.prompt is None and fset.n_layers == 17


def test_tiny_llava_with_a_prompt_preset_and_clear_cli_errors(tmp_path):
    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    make_dataset(store, "toy", tmp_path / "img", 6, broken=1)
    args = ["extract", "--store", url, "--dataset", "toy", "--model", "tiny-random/llava", "--decode-workers", "0",
            "--no-progress", "--pooling", "last,image_mean", "--layers", "0,-1"]  # fmt: skip
    out = _run([*args, "--prompt-preset", "radiology-knee"])
    assert out.returncode == 0, out.stderr[-2000:]
    store.refresh()
    summary = json.loads(store.sql("SELECT summary FROM runs").column("summary")[0].as_py())
    assert summary["images_committed"] == 6 and summary["failures"] == 1 and summary["layers"] == [0, 2]
    fs = store.feature_set(summary["feature_sets"]["last"])
    assert "knee X-ray" in fs.prompt and fs.pooling == "last"
    bad = _run([*args, "--layers", "9"])
    assert bad.returncode != 0 and "out of range" in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2
    missing = _run([*args[:-2], "--dataset", "nope"])
    assert missing.returncode != 0 and "unknown dataset 'nope'" in missing.stderr
