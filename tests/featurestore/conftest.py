"""Fixtures of the feature store tests: the same tests run against ``memory://`` and a local folder."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest


def _memory_url() -> str:
    return f"memory://medprobe-test-{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "local"])
def store_url(request, tmp_path: Path):
    """A fresh store URL: ``memory://<unique>`` or a folder under pytest's tmp_path."""
    if request.param == "memory":
        url = _memory_url()
        yield url
        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)
    else:
        yield str(tmp_path / "store")


@pytest.fixture(params=["memory", "local"])
def url_factory(request, tmp_path: Path):
    """Makes many fresh store URLs of one kind (for hypothesis examples)."""
    made: list[str] = []

    def make() -> str:
        url = _memory_url() if request.param == "memory" else str(tmp_path / f"store-{uuid.uuid4().hex[:12]}")
        made.append(url)
        return url

    yield make
    fs = fsspec.filesystem("memory")
    for url in made:
        if url.startswith("memory://") and fs.exists(url):
            fs.rm(url, recursive=True)
