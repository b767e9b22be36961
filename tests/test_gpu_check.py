"""benchmarks/gpu_check.sh cannot rot: its --dry-run runs every step on the CPU and writes the one table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    assert "| check | medprobe | baseline (same run) | ratio | target |" in table
    assert "GPU-marked tests" in table and "skipped" in table  # no CUDA here: they skip cleanly
    assert "extract tiny-random/clip" in table and "extract tiny-random/timm-vit" in table
    assert "decode: torchvision on cpu" in table and "--decode pil" in table  # the device path and its baseline
    assert "probes: 2 layers x 3 C" in table
    assert "did not" not in table
    assert (tmp_path / "gpu_check_extract.log").exists()
