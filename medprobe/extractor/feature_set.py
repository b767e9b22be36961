"""Feature-set identity: one feature set per (model, preprocessing, prompt, pooling, dtypes)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from medprobe.adapters.adapter import ModelIdentity
from medprobe.adapters.models.tokens import TOKENS, TokenGrid
from medprobe.featurestore import stable_hash
from medprobe.schemas import FeatureSetRow


def _key(identity: ModelIdentity, *, prompt: str | None, pooling: str, hidden_sizes: list[int], compute_dtype: str,
         storage_dtype: str) -> dict[str, Any]:  # fmt: skip
    """Every field of a feature set that changes its numbers (hashed into its id)."""
    return {
        "model_id": identity.model_id,
        "model_revision": identity.model_revision,
        "adapter": identity.adapter,
        "preprocessing": identity.preprocessing,
        "prompt": prompt,
        "pooling": pooling,
        "layer_semantics": identity.layer_semantics,
        "n_layers": identity.n_layers,
        "hidden_sizes": hidden_sizes,
        "compute_dtype": compute_dtype,
        "storage_dtype": storage_dtype,
    }


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
    key = _key(identity, prompt=prompt, pooling=pooling, hidden_sizes=list(identity.hidden_sizes),
               compute_dtype=compute_dtype, storage_dtype=storage_dtype)  # fmt: skip
    return FeatureSetRow(feature_set_id="fs-" + stable_hash(key), **key)


def token_feature_set_row(
    identity: ModelIdentity,
    grids: Mapping[int, TokenGrid],
    *,
    prompt: str | None,
    compute_dtype: str,
    storage_dtype: str,
) -> FeatureSetRow:
    """The feature set of every token of the layers' grids (pooling ``tokens``): its rows are ``grid.width`` wide
    (0 for a layer without a grid), and ``token_grid`` says how to cut them back into the grid. The id covers the
    grids as well as the model."""
    token_grid = json.dumps({str(layer): grids[layer].to_json() for layer in sorted(grids)}, sort_keys=True)
    widths = [grids[i].width if i in grids else 0 for i in range(identity.n_layers)]
    key = _key(identity, prompt=prompt, pooling=TOKENS, hidden_sizes=widths, compute_dtype=compute_dtype,
               storage_dtype=storage_dtype)  # fmt: skip
    return FeatureSetRow(feature_set_id="fs-" + stable_hash({**key, "token_grid": token_grid}), **key,
                         token_grid=token_grid)  # fmt: skip


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
