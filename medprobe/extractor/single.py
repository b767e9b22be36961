"""One image outside the store through a stored feature set's model: the query vector of ``medprobe search``.

The model is loaded exactly as ``extract`` loads it, and the feature-set row it would write is rebuilt and compared
with the stored one, so the vector is only returned when it is computed the way the stored rows were (same
weights, preprocessing, pooling, dtypes); it is rounded through the storage dtype like a committed row.
"""

from __future__ import annotations

import numpy as np
import torch

from medprobe.errors import InvalidInputError
from medprobe.extractor.feature_set import feature_set_row
from medprobe.imaging import decode_image, read_file_bytes
from medprobe.schemas import FeatureSetRow


def embed_file(
    fs: FeatureSetRow,
    layer: int,
    path: str,
    *,
    device: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> np.ndarray:
    """The ``(hidden,)`` feature of the image file at ``path`` at ``layer`` of feature set ``fs``."""
    from medprobe.adapters.loading import load_adapter

    data = read_file_bytes(path)
    image = decode_image(data, source=path)  # an undecodable file fails here, before any model is loaded
    if fs.prompt is not None:
        raise InvalidInputError(
            f"feature set {fs.feature_set_id} was extracted with a prompt; to search with an image that is not in the "
            "store, ingest it (medprobe ingest) and run medprobe extract with the same options, then pass --hash"
        )
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    adapter = load_adapter(
        fs.model_id, device=dev, dtype=fs.compute_dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle
    )
    row = feature_set_row(
        adapter.identity, prompt=None, pooling=fs.pooling, compute_dtype=fs.compute_dtype,
        storage_dtype=fs.storage_dtype,
    )  # fmt: skip
    if row.feature_set_id != fs.feature_set_id:
        raise InvalidInputError(
            f"model {fs.model_id} now loads as feature set {row.feature_set_id}, not {fs.feature_set_id} (its weights, "
            "preprocessing or medprobe changed): ingest the image and extract it, then pass --hash"
        )
    batch = adapter.preprocessor([image], None)
    with torch.no_grad():
        out = adapter.forward_pooled(batch, [int(layer)], [fs.pooling])[(fs.pooling, int(layer))]
    vector = out[0].float().cpu().numpy()
    storage = {"float16": np.float16, "float32": np.float32}.get(fs.storage_dtype)
    if storage is not None:
        vector = vector.astype(storage)
    elif fs.storage_dtype == "bfloat16":
        vector = out[0].to(torch.bfloat16).float().cpu().numpy()
    return vector.astype(np.float32)
