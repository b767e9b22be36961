"""Fixtures shared by every test: stores (memory and local), the shared real data, a synthetic feature store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest

from medprobe.featurestore import FeatureStore
from tests.helpers.features import fill_store
from tests.helpers.paths import SHARED, SHARED_DATA


def _memory_url() -> str:
    return f"memory://medprobe-test-{uuid.uuid4().hex}"


def _drop_memory(url: str) -> None:
    fs = fsspec.filesystem("memory")
    if url.startswith("memory://") and fs.exists(url):
        fs.rm(url, recursive=True)


@pytest.fixture(params=["memory", "local"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh store URL: ``memory://<unique>`` or a folder of its own (each test runs on both)."""
    url = _memory_url() if request.param == "memory" else str(tmp_path_factory.mktemp("store"))
    yield url
    _drop_memory(url)


@pytest.fixture(params=["memory", "local"])
def url_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes many fresh store URLs of one kind (for hypothesis examples)."""
    made: list[str] = []

    def make() -> str:
        url = _memory_url() if request.param == "memory" else str(tmp_path / f"store-{uuid.uuid4().hex[:12]}")
        made.append(url)
        return url

    yield make
    for url in made:
        _drop_memory(url)


@pytest.fixture
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """A fresh store in a folder of its own (subprocesses and DataLoader workers can see it; tmp_path stays free)."""
    return FeatureStore.open(str(tmp_path_factory.mktemp("store")))


@pytest.fixture
def synth_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """A local store with one synthetic feature set over 240 labelled images (3 tasks)."""
    s = FeatureStore.open(str(tmp_path_factory.mktemp("synth-store")))
    fill_store(s)
    return s


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder beside the checkout (skips the test when it is absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (it lives beside the checkout)")
    return SHARED


@pytest.fixture
def shared_data(shared_dir: Path) -> Path:
    """``../shared/data`` (skips the test when it is absent)."""
    return shared_dir / "data"
