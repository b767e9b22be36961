"""``search``: the stored images nearest to one image (cosine, a FAISS index kept in the store)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from medprobe.errors import InvalidInputError
from medprobe.layerspec import resolve_layer
from medprobe.workflows.common import StoreArg, open_store
from medprobe.workflows.probes import stored_layers
from medprobe.workflows.results import Result


def _query_vector(
    store: Any, fs: Any, layer: int, image: str | None, image_hash: str | None, *, device: str | None,
    trust_remote_code: bool, allow_pickle: bool,
) -> tuple[np.ndarray, str | None, str]:  # fmt: skip
    """The query's feature, its image hash (when known) and where it came from (store | model)."""
    from medprobe.imaging import read_file_bytes
    from medprobe.ingestion.hashing import sha256_hex

    if (image is None) == (image_hash is None):
        raise InvalidInputError("give the query as --image PATH or --image-hash IMAGE_HASH (one of them)")
    if image is not None:
        image_hash = sha256_hex(read_file_bytes(image))
    present = store.sql(
        "SELECT count(*) AS n FROM activations WHERE feature_set_id = ? AND layer = ? AND image_hash = ?",
        [fs.feature_set_id, layer, image_hash],
    ).column("n")[0].as_py()
    if present:
        return store.read(fs.feature_set_id, layer, [image_hash])[0].astype(np.float32), image_hash, "store"
    if image is None:
        raise InvalidInputError(
            f"image {image_hash} has no features in feature set {fs.feature_set_id} at layer {layer}: check the hash "
            "(medprobe sql \"SELECT image_hash FROM images\"), or pass the file with --image"
        )
    from medprobe.extractor.single import embed_file

    vector = embed_file(fs, layer, image, device=device, trust_remote_code=trust_remote_code,
                        allow_pickle=allow_pickle)  # fmt: skip
    return vector, image_hash, "model"


def _memberships(store: Any, hashes: list[str]) -> dict[str, list[dict[str, Any]]]:
    rows = store.sql(
        "SELECT image_hash, dataset, split, labels, source_path FROM dataset_images "
        "WHERE list_contains(?, image_hash) ORDER BY dataset",
        [hashes],
    ).to_pylist()
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["image_hash"], []).append(r)
    return out


def label_mix(neighbours: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per task: how many neighbour images carry each label value (multilabel findings counted one by one). An
    image that is a member of several datasets counts once per value, not once per membership."""
    mix: dict[str, Counter[str]] = {}
    seen: set[tuple[str, str, str]] = set()
    for n in neighbours:
        for task, value in (n.get("labels") or {}).items():
            for v in value if isinstance(value, list) else [value]:
                key = (str(n.get("image_hash")), task, str(v))
                if key not in seen:
                    seen.add(key)
                    mix.setdefault(task, Counter())[str(v)] += 1
    return {task: dict(sorted(c.items())) for task, c in sorted(mix.items())}


@dataclass
class SearchResult(Result):
    """The nearest stored images (one row per neighbour and dataset membership) and their labels' mix."""

    feature_set_id: str
    layer: int
    query: dict[str, Any]
    k: int
    index: dict[str, Any]
    label_mix: dict[str, dict[str, int]]
    neighbours: list[dict[str, Any]]

    def rows(self) -> list[dict[str, Any]]:
        """One row per neighbour (labels as JSON text)."""
        return [{**n, "labels": json.dumps(n["labels"])} for n in self.neighbours]


def _neighbours(st: Any, hits: list[tuple[str, float]]) -> list[dict[str, Any]]:
    members = _memberships(st, [h for h, _ in hits])
    out = []
    for rank, (h, sim) in enumerate(hits, start=1):
        for m in members.get(h) or [{"dataset": None, "split": None, "labels": None, "source_path": None}]:
            out.append({
                "rank": rank, "image_hash": h, "similarity": sim, "distance": 1.0 - sim,
                "dataset": m["dataset"], "split": m["split"],
                "labels": json.loads(m["labels"]) if m["labels"] else None, "source_path": m["source_path"],
            })  # fmt: skip
    return out


def search(
    *, feature_set: str | None = None, model: str | None = None, prompt: str | None = None,
    pooling: str | None = None, layers: str | int | None = None, image: str | None = None,
    image_hash: str | None = None, k: int = 10, device: str | None = None, trust_remote_code: bool = False,
    allow_pickle: bool = False, store: StoreArg = None,
) -> SearchResult:  # fmt: skip
    """The stored images most similar to one image (cosine; the query itself left out), with their labels.

    Args:
        feature_set: the feature set id; or name it by ``model`` (and ``prompt``, ``pooling``).
        layers: the stored layer searched (default -1, the last stored).
        image: a query image file (its stored features when it is in the store, else the model is run on it);
            image_hash: or a stored image's hash.
        k: neighbours to return.
        device, trust_remote_code, allow_pickle: how the model runs when the query image is not stored.
        store: a store URL or an open ``FeatureStore``.
    """
    from medprobe.featurestore import stored_index
    from medprobe.trainer.data import resolve_feature_set

    st = open_store(store)
    fs = resolve_feature_set(st, feature_set, model, prompt, pooling)
    stored = stored_layers(st, fs.feature_set_id)
    layer = resolve_layer("-1" if layers is None else str(layers), stored, what=f"feature set {fs.feature_set_id}")
    query, qhash, source = _query_vector(st, fs, layer, image, image_hash, device=device,
                                         trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)  # fmt: skip
    ix = stored_index(st, fs.feature_set_id, layer)
    in_index = qhash is not None and source == "store"
    want = k + 1 if in_index else k
    if k < 1 or want > len(ix.hashes) or (in_index and len(ix.hashes) < 2):
        raise InvalidInputError(
            f"--k {k}: the index holds {len(ix.hashes) - int(in_index)} other image(s); choose k from 1 to "
            f"{len(ix.hashes) - int(in_index)}"
        )
    sims, pos = ix.search(query[None, :], want)
    hits = [(ix.hashes[int(p)], float(s)) for p, s in zip(pos[0], sims[0], strict=True) if p >= 0]
    neighbours = _neighbours(st, [(h, s) for h, s in hits if h != qhash][:k])
    return SearchResult(
        feature_set_id=fs.feature_set_id, layer=layer,
        query={"image": image, "image_hash": qhash, "features_from": source}, k=k,
        index={"kind": ix.kind, "description": ix.description, "state": ix.state, "built": ix.built},
        label_mix=label_mix(neighbours), neighbours=neighbours,
    )  # fmt: skip
