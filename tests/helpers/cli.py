"""Running ``medprobe`` as a user does: in-process through ``main`` (fast), or as a subprocess (signals, kills)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

import pytest

from medprobe.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``medprobe ARGS`` in this process; returns (exit code, stdout, stderr with whitespace collapsed, since
    rich wraps long messages)."""
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def run_subprocess(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m medprobe.cli.main ARGS`` in a child process (``env`` added to this one's)."""
    return subprocess.run(
        [sys.executable, "-m", "medprobe.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
