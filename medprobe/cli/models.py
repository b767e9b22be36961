"""``medprobe models``: what can be loaded, and for one model spec its layers, poolings and preprocessing."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from medprobe.cli.common import console
from medprobe.cli.options import AllowPickleOpt, DeviceOpt, FormatOpt, OutOpt, TrustRemoteCodeOpt
from medprobe.cli.output import emit
from medprobe.schemas.vocab import ComputeDType
from medprobe.workflows import modelinfo as wf


def register(app: typer.Typer) -> None:
    """Add ``models`` to ``app``."""

    @app.command("models")
    def models_cmd(
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                "-m",
                help="Describe this model spec (layers, hidden sizes, poolings, preprocessing); no images are run.",
            ),
        ] = None,
        device: DeviceOpt = None,
        dtype: Annotated[ComputeDType, typer.Option("--dtype", help="Load the weights in this dtype.")] = (
            ComputeDType.fp32
        ),
        trust_remote_code: TrustRemoteCodeOpt = False,
        allow_pickle: AllowPickleOpt = False,
        save: Annotated[
            str | None,
            typer.Option(
                "--save",
                help="With a tiny-random/* or random-full/* spec: write it to this directory in its hub layout "
                "(what a download leaves), to try the local-directory path offline.",
            ),
        ] = None,
        fmt: FormatOpt = None,
        out: OutOpt = None,
    ) -> None:  # no --store: models reads none
        """List supported backends, model types and random models; with -m, describe one model."""
        result = wf.models(model=model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                           allow_pickle=allow_pickle, save=save)  # fmt: skip
        if result.saved is not None:
            console.print(f"saved {model} to {result.saved}; load it with -m {result.saved}")
            return
        if result.description is None:
            rows = result.supported
            emit(fmt, out, rows=rows, document=rows, show=lambda: console.print(_supported_table(rows)))
            return
        info = result.description
        emit(fmt, out, rows=result.rows(), document=info, show=lambda: console.print(_describe_table(info)))


def _supported_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="what medprobe loads (`medprobe models -m SPEC` describes one)")
    for col in ("backend", "name", "spec / examples", "layers"):
        t.add_column(col)
    for row in rows:
        spec = row["spec"] + (f"\ne.g. {row['examples']}" if row["examples"] else "")
        t.add_row(row["backend"], row["name"], spec, row["layers"])
    return t


def _describe_table(info: dict[str, Any]) -> Table:
    t = Table(title=str(info["model"]), show_header=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
    sizes = info["hidden_sizes"]
    shown = {
        **info,
        "hidden_sizes": f"{sizes[0]} x {len(sizes)}" if len(set(sizes)) == 1 else ", ".join(map(str, sizes)),
        "poolings": ", ".join(info["poolings"]),
        "preprocessing": json.dumps(info["preprocessing"]),
        "extra": json.dumps(info["extra"]),
    }
    for key, value in shown.items():
        t.add_row(key, str(value))
    return t
