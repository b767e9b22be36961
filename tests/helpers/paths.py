"""Where the shared real data lives (beside the checkout, never inside it)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
SHARED_DATA = SHARED / "data"
KNEE = SHARED_DATA / "knee-oa-kl"


def require(path: Path) -> Path:
    """``path`` if it exists; otherwise skip the test (the shared data folder is absent on this machine)."""
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared real data lives beside the checkout)")
    return path
