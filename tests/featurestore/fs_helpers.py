"""Shared helpers of the feature store tests: feature set rows, deterministic activations, image hashes."""

from __future__ import annotations

import hashlib

import numpy as np

from medprobe.featurestore import FeatureStore
from medprobe.schemas import FeatureSetRow


def image_hash(key: object) -> str:
    """A sha256 hex digest standing in for an image's hash."""
    return hashlib.sha256(str(key).encode()).hexdigest()


def feature_set_row(
    feature_set_id: str = "fs-test", n_layers: int = 4, hidden: int | list[int] = 16, storage_dtype: str = "float16"
) -> FeatureSetRow:
    hidden_sizes = hidden if isinstance(hidden, list) else [hidden] * n_layers
    return FeatureSetRow(
        feature_set_id=feature_set_id,
        model_id="test/model",
        model_revision="0" * 40,
        adapter="test",
        preprocessing="{}",
        prompt=None,
        pooling="mean",
        layer_semantics="index i = output of block i",
        n_layers=n_layers,
        hidden_sizes=hidden_sizes,
        compute_dtype="fp32",
        storage_dtype=storage_dtype,
    )


def activation(h: str, layer: int, hidden: int, salt: int = 0) -> np.ndarray:
    """The float32 activation a test writer commits for image ``h`` at ``layer`` (derived from the hash)."""
    seed = int(h[:15], 16) * 1009 + layer * 31 + salt
    return np.random.default_rng(seed).standard_normal(hidden).astype(np.float32)


def activations(hashes: list[str], layer: int, hidden: int, salt: int = 0) -> np.ndarray:
    return np.stack([activation(h, layer, hidden, salt) for h in hashes]) if hashes else np.empty((0, hidden))


def stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """What reading back ``x`` stored as ``dtype`` gives (bfloat16: rounded to nearest even, as float32)."""
    if dtype == "bfloat16":
        from medprobe.featurestore.segments import from_bfloat16_bits, to_bfloat16_bits

        return from_bfloat16_bits(to_bfloat16_bits(x))
    return np.asarray(x, dtype=dtype)


def open_with_feature_set(url: str, row: FeatureSetRow | None = None) -> FeatureStore:
    store = FeatureStore.open(url)
    store.register_feature_set(row or feature_set_row())
    return store
