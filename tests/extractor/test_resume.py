"""SIGKILL `medprobe extract` mid-run, repeatedly; the rerun finishes with every row exactly once and
forwards only the images that were not committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from medprobe.featurestore import FeatureStore
from medprobe.featurestore.fragments import list_fragments
from tests.helpers.datasets import make_dataset

N_IMAGES = 160
CMD = [
    sys.executable, "-m", "medprobe.cli.main", "extract", "--dataset", "toy", "--model", "tiny-random/clip",
    "--pooling", "cls,mean", "--batch-size", "2", "--commit-every", "6", "--decode-workers", "1", "--no-progress",
]  # fmt: skip


def _complete_images(store: FeatureStore) -> int:
    """Images with all 2 poolings x 2 layers committed."""
    t = store.sql(
        "SELECT count(*) AS n FROM (SELECT image_hash FROM (SELECT DISTINCT feature_set_id, layer, image_hash "
        "FROM raw_activations) GROUP BY image_hash HAVING count(*) = 4)"
    )
    return t.column("n")[0].as_py()


def _run_and_kill(url: str, env: dict, after_new_segments: int) -> bool:
    """Start an extraction, SIGKILL it once ``after_new_segments`` more segments are committed; True if killed."""
    loc = FeatureStore.open(url).loc
    before = len(list_fragments(loc, "activations"))
    proc = subprocess.Popen([*CMD, "--store", url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list_fragments(loc, "activations")) >= before + after_new_segments:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    return False


def test_sigkill_repeatedly_then_resume_commits_each_row_once(tmp_path):
    url = str(tmp_path / "store")
    store = FeatureStore.open(url)
    make_dataset(store, "toy", tmp_path / "img", N_IMAGES)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    kills = 0
    for new_segments in (2, 6, 10):
        kills += _run_and_kill(url, env, new_segments)
    assert kills >= 2, "the extraction finished before it could be killed; make the test dataset larger"
    done_before = _complete_images(store)
    assert 0 < done_before < N_IMAGES
    out = subprocess.run([*CMD, "--store", url], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    store.refresh()
    dup = store.sql(
        "SELECT count(*) AS n FROM (SELECT feature_set_id, layer, image_hash FROM raw_activations "
        "GROUP BY ALL HAVING count(*) > 1)"
    )
    assert dup.column("n")[0].as_py() == 0
    assert _complete_images(store) == N_IMAGES
    runs = store.sql("SELECT status, summary FROM runs WHERE kind = 'extract' ORDER BY updated_at").to_pylist()
    last = json.loads(runs[-1]["summary"])
    assert runs[-1]["status"] == "finished"
    # the rerun forwarded exactly the images that were not (completely) committed when it started
    assert last["images_skipped"] == done_before
    assert last["images_forwarded"] == N_IMAGES - done_before
    # killed runs never wrote their final row: their process is gone, so the runs view shows them abandoned
    assert sum(r["status"] == "abandoned" for r in runs) >= kills
