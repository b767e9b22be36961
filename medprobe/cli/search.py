"""``medprobe search``: the stored images nearest to one image (cosine, FAISS index kept in the store)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from medprobe.cli.common import console
from medprobe.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    Output,
    TrustRemoteCodeOpt,
    layers_option,
    with_group,
)
from medprobe.cli.probes import FeatureSetChoice
from medprobe.workflows import similarity as wf


def _print_result(r: wf.SearchResult) -> None:
    qhash = r.query["image_hash"]
    name = qhash[:12] if qhash else r.query["image"]
    table = Table(title=f"{r.k} nearest to {name}  ({r.feature_set_id}, layer {r.layer})")
    for col in ("rank", "similarity", "image", "dataset", "split", "labels", "source"):
        table.add_column(col)
    for n in r.neighbours:
        table.add_row(str(n["rank"]), f"{n['similarity']:.4f}", n["image_hash"][:12], str(n["dataset"]),
                      str(n["split"]), json.dumps(n["labels"]), str(n["source_path"]))  # fmt: skip
    console.print(table)
    text = "; ".join(f"{t}: {', '.join(f'{v} x{c}' for v, c in vals.items())}" for t, vals in r.label_mix.items())
    console.print(f"labels of the neighbours: {text or 'none'}", highlight=False)
    built = "built now and kept in the store" if r.index["built"] else "loaded from the store"
    console.print(f"index: {r.index['description']}, {built}; query features from the {r.query['features_from']}",
                  highlight=False)  # fmt: skip


@with_group(FeatureSetChoice, "choice")
@with_group(Output, "output")
def search(
    output: Output,
    choice: FeatureSetChoice,
    layers: Annotated[str | None, layers_option("stored layer of the feature set", "-1, the last stored")] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", help="Query image file (in the store: its stored features; else run the model)."),
    ] = None,
    image_hash: Annotated[
        str | None, typer.Option("--image-hash", "--hash", help="Query by a stored image's hash.")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours to return.")] = 10,
    device: DeviceOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """The stored images most similar to one image (cosine; the query itself left out), with their labels."""
    output.check()
    result = wf.search(
        feature_set=choice.feature_set, model=choice.model, prompt=choice.prompt, pooling=choice.pooling,
        layers=layers, image=image, image_hash=image_hash, k=k, device=device, trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle, store=output.store,
    )  # fmt: skip
    output.render(result, show=lambda: _print_result(result))


def register(app: typer.Typer) -> None:
    """Add ``search``."""
    app.command("search")(search)
