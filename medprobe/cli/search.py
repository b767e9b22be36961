"""``medprobe search``: the stored images nearest to one image (cosine, FAISS index kept in the store)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from medprobe.cli.common import console, open_store
from medprobe.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    FormatOpt,
    OutOpt,
    StoreOpt,
    TrustRemoteCodeOpt,
    layers_option,
    with_group,
)
from medprobe.cli.output import emit, resolve_format
from medprobe.cli.train import FeatureSetChoice, stored_layers
from medprobe.errors import InvalidInputError
from medprobe.layerspec import resolve_layer


def _query_vector(
    store: Any, fs: Any, layer: int, image: str | None, image_hash: str | None, *, device: str | None,
    trust_remote_code: bool, allow_pickle: bool,
) -> tuple[np.ndarray, str | None, str]:  # fmt: skip
    """The query's feature, its image hash (when known) and where it came from (store | model)."""
    from medprobe.imaging import read_file_bytes
    from medprobe.ingest.hashing import sha256_hex

    if (image is None) == (image_hash is None):
        raise InvalidInputError("give the query as --image PATH or --hash IMAGE_HASH (one of them)")
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
    """Per task: how many neighbours carry each label value (multilabel findings counted one by one)."""
    mix: dict[str, Counter[str]] = {}
    for n in neighbours:
        for task, value in (n.get("labels") or {}).items():
            for v in value if isinstance(value, list) else [value]:
                mix.setdefault(task, Counter())[str(v)] += 1
    return {task: dict(sorted(c.items())) for task, c in sorted(mix.items())}


def register(app: typer.Typer) -> None:
    """Add ``search``."""

    @app.command()
    @with_group(FeatureSetChoice, "choice")
    def search(
        choice: FeatureSetChoice,
        layers: Annotated[
            str | None, layers_option("stored layer of the feature set", "-1, the last stored")
        ] = None,
        image: Annotated[
            str | None,
            typer.Option("--image", help="Query image file (in the store: its stored features; else run the model)."),
        ] = None,
        image_hash: Annotated[str | None, typer.Option("--hash", help="Query by a stored image's hash.")] = None,
        k: Annotated[int, typer.Option("--k", min=1, help="Neighbours to return.")] = 10,
        device: DeviceOpt = None,
        trust_remote_code: TrustRemoteCodeOpt = False,
        allow_pickle: AllowPickleOpt = False,
        fmt: FormatOpt = None,
        out: OutOpt = None,
        store: StoreOpt = None,
    ) -> None:
        """The stored images most similar to one image (cosine; the query itself left out), with their labels."""
        from medprobe.featurestore import stored_index
        from medprobe.trainer.data import resolve_feature_set

        resolve_format(fmt, out)
        st = open_store(store)
        fs = resolve_feature_set(st, choice.feature_set, choice.model, choice.prompt, choice.pooling)
        stored = stored_layers(st, fs.feature_set_id)
        layer = resolve_layer("-1" if layers is None else layers, stored, what=f"feature set {fs.feature_set_id}")
        query, qhash, source = _query_vector(
            st, fs, layer, image, image_hash, device=device, trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )  # fmt: skip
        ix = stored_index(st, fs.feature_set_id, layer)
        in_index = qhash is not None and source == "store"
        want = k + 1 if in_index else k
        if want > len(ix.hashes) or (in_index and len(ix.hashes) < 2):
            raise InvalidInputError(
                f"--k {k}: the index holds {len(ix.hashes) - int(in_index)} other image(s); choose k from 1 to "
                f"{len(ix.hashes) - int(in_index)}"
            )
        sims, pos = ix.search(query[None, :], want)
        hits = [(ix.hashes[int(p)], float(s)) for p, s in zip(pos[0], sims[0], strict=True) if p >= 0]
        hits = [(h, s) for h, s in hits if h != qhash][:k]
        members = _memberships(st, [h for h, _ in hits])
        neighbours = []
        for rank, (h, sim) in enumerate(hits, start=1):
            for m in members.get(h) or [{"dataset": None, "split": None, "labels": None, "source_path": None}]:
                neighbours.append({
                    "rank": rank, "image_hash": h, "similarity": sim, "distance": 1.0 - sim,
                    "dataset": m["dataset"], "split": m["split"],
                    "labels": json.loads(m["labels"]) if m["labels"] else None, "source_path": m["source_path"],
                })  # fmt: skip
        mix = label_mix(neighbours)
        document = {
            "feature_set_id": fs.feature_set_id,
            "layer": layer,
            "query": {"image": image, "image_hash": qhash, "features_from": source},
            "k": k,
            "index": {"kind": ix.kind, "description": ix.description, "state": ix.state, "built": ix.built},
            "label_mix": mix,
            "neighbours": neighbours,
        }

        def show() -> None:
            name = qhash[:12] if qhash else image
            table = Table(title=f"{k} nearest to {name}  ({fs.feature_set_id}, layer {layer})")
            for col in ("rank", "similarity", "image", "dataset", "split", "labels", "source"):
                table.add_column(col)
            for n in neighbours:
                table.add_row(str(n["rank"]), f"{n['similarity']:.4f}", n["image_hash"][:12], str(n["dataset"]),
                              str(n["split"]), json.dumps(n["labels"]), str(n["source_path"]))  # fmt: skip
            console.print(table)
            text = "; ".join(f"{t}: {', '.join(f'{v} x{c}' for v, c in vals.items())}" for t, vals in mix.items())
            console.print(f"labels of the neighbours: {text or 'none'}", highlight=False)
            built = "built now and kept in the store" if ix.built else "loaded from the store"
            console.print(f"index: {ix.description}, {built}; query features from the {source}", highlight=False)

        rows = [{**n, "labels": json.dumps(n["labels"])} for n in neighbours]
        emit(fmt, out, rows=rows, document=document, show=show)
