"""Feature-set identity: one feature set per (model, preprocessing, prompt, pooling, dtypes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medprobe.adapters.adapter import ModelIdentity
from medprobe.featurestore import stable_hash
from medprobe.schemas import FeatureSetRow


def feature_set_row(
    identity: ModelIdentity,
    *,
    prompt: str | None,
    pooling: str,
    compute_dtype: str,
    storage_dtype: str,
) -> FeatureSetRow:
    """The :class:`FeatureSetRow` for one pooling; its id hashes every field that changes the numbers.

    ``prompt`` is the exact text given to the processor (chat template applied), or None for
    vision-only encoders. Layers are not part of the key: a feature set grows by layer and by image.
    """
    key: dict[str, Any] = {
        "model_id": identity.model_id,
        "model_revision": identity.model_revision,
        "adapter": identity.adapter,
        "preprocessing": identity.preprocessing,
        "prompt": prompt,
        "pooling": pooling,
        "layer_semantics": identity.layer_semantics,
        "n_layers": identity.n_layers,
        "hidden_sizes": list(identity.hidden_sizes),
        "compute_dtype": compute_dtype,
        "storage_dtype": storage_dtype,
    }
    return FeatureSetRow(feature_set_id="fs-" + stable_hash(key), **key)


def feature_set_rows(
    identity: ModelIdentity,
    *,
    prompt: str | None,
    poolings: Sequence[str],
    compute_dtype: str,
    storage_dtype: str,
) -> dict[str, FeatureSetRow]:
    """``{pooling: FeatureSetRow}`` for every requested pooling."""
    return {
        p: feature_set_row(identity, prompt=prompt, pooling=p, compute_dtype=compute_dtype, storage_dtype=storage_dtype)
        for p in poolings
    }
