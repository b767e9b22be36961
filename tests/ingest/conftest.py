"""Fixtures of the ingest tests: a fresh in-memory store, and the shared real data (skipped when absent)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from ingest_helpers import SHARED_DATA

from medprobe.featurestore import FeatureStore


@pytest.fixture
def store() -> FeatureStore:
    return FeatureStore.open(f"memory://ingest-{uuid.uuid4().hex}")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "knee-oa-kl" / "labels.csv").is_file():
        pytest.skip("../shared/data is absent (the shared real data lives beside the checkout)")
    return SHARED_DATA
