"""SIGKILL after every fragment write of an ingest and of a sweep: readers see the old state or the new, never a
mix; rerunning completes the work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.featurestore import FeatureStore
from tests.helpers.features import fill_store

KILLER = Path(__file__).resolve().parents[1] / "helpers" / "kill_after.py"
ROOT = Path(__file__).resolve().parents[2]


def _run_killed(k: int, args: list[str]) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(KILLER), str(k), *args], env=env, capture_output=True, timeout=300)
    return proc.returncode


def _state(url: str) -> tuple[int, int, int, int]:
    s = FeatureStore.open(url, create=False)
    q = lambda sql: s.sql(sql).column(0)[0].as_py()  # noqa: E731
    return (
        q("SELECT count(*) FROM datasets WHERE dataset = 'k'"),
        q("SELECT count(*) FROM dataset_images WHERE dataset = 'k'"),
        q("SELECT count(*) FROM tasks WHERE dataset = 'k'"),
        q("SELECT count(*) FROM failures WHERE dataset = 'k'"),
    )


def test_a_killed_ingest_leaves_nothing_or_everything(tmp_path) -> None:
    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 30 * i + (cls == "b"), np.uint8)).save(src / cls / f"{i}.png")
    (src / "a" / "broken.png").write_bytes(b"not a png")  # a failures row too
    args = ["ingest", str(src), "--layout", "imagefolder", "-d", "k"]
    full = (1, 8, 1, 1)
    for k in range(1, 9):
        url = str(tmp_path / f"store{k}")
        FeatureStore.open(url)
        code = _run_killed(k, [*args, "-s", url])
        state = _state(url)
        assert state in ((0, 0, 0, 0), full), (k, code, state)
        if k in (3, 6):  # inside the transaction: rerunning the same ingest completes it
            done = subprocess.run([sys.executable, "-m", "medprobe.cli.main", *args, "-s", url], capture_output=True)
            assert done.returncode == 0 and _state(url) == full, (k, done.stderr[-500:])


def test_a_killed_sweep_never_shows_results_without_predictions(tmp_path) -> None:
    url = str(tmp_path / "store")
    fill_store(FeatureStore.open(url))
    args = ["sweep", "-t", "grade", "--feature-set", "fs-synth", "--c-grid", "0.1,1", "--n-boot", "20", "--cv", "3",
            "-s", url]  # fmt: skip
    for k in (2, 3):  # after probe_results, after predictions: both inside the transaction
        _run_killed(k, args)
        s = FeatureStore.open(url, create=False)
        bare = s.sql("SELECT count(*) FROM probe_results r ANTI JOIN predictions p USING (run_id, probe_id)")
        assert bare.column(0)[0].as_py() == 0, k
    runs = s.sql("SELECT run_id, status, host, pid FROM runs WHERE kind = 'sweep'").to_pylist()
    from medprobe.featurestore import effective_status

    assert {effective_status(r) for r in runs} <= {"abandoned", "finished"}
    assert any(effective_status(r) == "abandoned" for r in runs)
    # the runs view says so itself (SQL users see what `status` and `report` show), the stored rows stay as written
    assert {r["status"] for r in runs} == {effective_status(r) for r in runs}
    assert "abandoned" not in s.sql("SELECT status FROM raw_runs").column(0).to_pylist()
