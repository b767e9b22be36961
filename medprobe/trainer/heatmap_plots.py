"""Heat map PNGs: a probe's per-token map over the image as the model saw it, with a colour bar, and galleries.

The map covers what the model saw: for an eval transform that center-crops (timm, EfficientNet-Lite0, processors
with ``do_center_crop``) the central square of the image, else the whole image (resized, as the processor does).
Colours are per-token logits of the shown class, centred on their mean (the class's logit when the map is exact):
red tokens hold more evidence for the class than the image's average, blue less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from PIL import Image

from medprobe.trainer.clinical_plots import save_png


@dataclass
class MapView:
    """One image's map as drawn: the image region the model saw, the map of the shown class and its caption."""

    image: Image.Image
    grid_map: np.ndarray  # (rows, cols) token logits of the shown class
    caption: str


def model_view(image: Image.Image, preprocessing: str) -> Image.Image:
    """The region of ``image`` the model saw: its central square when the preprocessing center-crops."""
    crops = '"do_center_crop": true' in preprocessing or "CenterCrop" in preprocessing or '"center_crop"' in \
        preprocessing  # fmt: skip
    rgb = image.convert("RGB")
    if not crops:
        return rgb
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return rgb.crop((left, top, left + side, top + side))


def _draw(ax: plt.Axes, view: MapView, *, colorbar: bool, fig: plt.Figure | None = None, label: str = "") -> None:
    w, h = view.image.size
    ax.imshow(np.asarray(view.image), extent=(0, w, h, 0))
    centre = float(view.grid_map.mean())
    span = float(np.abs(view.grid_map - centre).max()) or 1.0
    norm = TwoSlopeNorm(vcenter=centre, vmin=centre - span, vmax=centre + span)
    shown = ax.imshow(view.grid_map, extent=(0, w, h, 0), cmap="coolwarm", norm=norm, alpha=0.5,
                      interpolation="bilinear")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(view.caption, fontsize=8)
    if colorbar and fig is not None:
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label(label, fontsize=8)


def overlay_png(view: MapView, path: Path, *, label: str) -> Path:
    """One image with its map and a colour bar labelled ``label``."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    _draw(ax, view, colorbar=True, fig=fig, label=label)
    return save_png(fig, path)


def mean_maps_png(maps: dict[str, tuple[np.ndarray, int]], title: str, path: Path) -> Path:
    """One panel per class: the mean over its images of the class's map minus each map's own mean (where, on
    average, the class's evidence lies above the image's average), on the token grid alone (no image pixels)."""
    names = list(maps)
    fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names) + 0.8, 3.2), squeeze=False)
    span = max(float(np.abs(m).max()) for m, _ in maps.values()) or 1.0
    shown = None
    for ax, name in zip(axes[0], names, strict=True):
        mean_map, n = maps[name]
        shown = ax.imshow(mean_map, cmap="coolwarm", vmin=-span, vmax=span, interpolation="nearest")
        ax.set_title(f"{name} (n={n})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if shown is not None:
        bar = fig.colorbar(shown, ax=list(axes[0]), fraction=0.02, pad=0.02)
        bar.set_label("token logit above the image's mean", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def gallery_png(views: Sequence[MapView], title: str, path: Path) -> Path:
    """Up to a few rows of maps side by side under ``title``."""
    n = len(views)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, view in zip(axes.ravel(), views, strict=False):
        _draw(ax, view, colorbar=False)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
