"""``medprobe heatmap``: where in an image a stored probe's evidence lies (per-token maps, galleries, border share)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from medprobe.cli.common import console, err_console
from medprobe.cli.options import DeviceOpt, SplitOpt, StoreOpt
from medprobe.workflows.common import N_BOOT
from medprobe.workflows.heatmap import HeatmapResult
from medprobe.workflows.heatmap import heatmap as run_heatmap


def _print(result: HeatmapResult) -> None:
    how = "exact (the map's mean is the probe's logit)" if result.exact else "approximate (per-token readout)"
    console.print(
        f"probe {result.probe_id}: {result.n_images} image(s) mapped on the {result.grid[0]} x {result.grid[1]} token "
        f"grid of layer {result.layer} ({result.token_feature_set_id}), {how}; PNGs in {result.out} (run "
        f"{result.run_id})",
        highlight=False,
    )
    table = Table(title=f"evidence in the border ({result.border_tokens} token(s) wide) against the centre")
    for col in ("class", "images", "border share [95% CI]", "border area"):
        table.add_column(col)
    for name, e in result.border.items():
        if not e["n"]:
            continue
        table.add_row(name, str(e["n"]), f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]",
                      f"{e['border_area']:.3f}")  # fmt: skip
    console.print(table)
    for source, why in list(result.skipped.items())[:5]:
        err_console.print(f"skipped {source}: {why}", highlight=False)


def heatmap(
    probe: Annotated[str, typer.Option("--probe", help="A probe id of probe_results (a fitted probe).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the PNGs.")] = "heatmaps",
    hashes: Annotated[
        list[str] | None, typer.Option("--hash", help="These images, by hash (comma list or repeated).")
    ] = None,
    image: Annotated[str | None, typer.Option("--image", help="One image file (run through the model).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="The images of this dataset.")] = None,
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N images (by hash).")] = None,
    border: Annotated[
        float, typer.Option("--border", help="Border width as a fraction of the image side (at least one token).")
    ] = 0.15,
    gallery: Annotated[int, typer.Option("--gallery", min=1, help="Images per gallery of a class.")] = 8,
    overlays: Annotated[
        bool, typer.Option("--overlays/--no-overlays", help="One overlay PNG per image (off: galleries and rows).")
    ] = True,
    n_boot: Annotated[int, typer.Option("--n-boot", min=1, help="Bootstrap replicates for the CIs.")] = N_BOOT,
    device: DeviceOpt = None,
    store: StoreOpt = None,
) -> None:
    """Per-token maps of a stored probe over images (--hash, --image or --dataset): PNG overlays, per-class
    galleries of the most confident true and false positives, and the share of evidence in the image border; one
    summary row per image in the heatmaps table (medprobe sql "SELECT * FROM heatmaps WHERE run_id = '...'")."""
    result = run_heatmap(probe=probe, hashes=hashes, image=image, dataset=dataset, split=split, limit=limit, out=out,
                         border=border, gallery=gallery, overlays=overlays, n_boot=n_boot, device=device,
                         store=store)  # fmt: skip
    _print(result)


def register(app: typer.Typer) -> None:
    """Add ``heatmap``."""
    app.command("heatmap")(heatmap)
