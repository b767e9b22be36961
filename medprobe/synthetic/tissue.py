"""A clearly labelled SYNTHETIC histology-like dataset for the demo (no real patient data).

Tiles are drawn with PIL: a pink eosin background and purple haematoxylin nuclei. Three classes differ in
nucleus density, size and shape, like the tissue classes of real pathology sets, and every synthetic
"patient" has its own stain colour and brightness, so a probe must generalise across patients (the split
is grouped by patient). Everything is seeded, so the same files come out on every machine.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("normal", "lymphocytic", "tumor")


@dataclass(frozen=True)
class TileStyle:
    nuclei: tuple[int, int]  # min, max count per tile
    radius: tuple[float, float]  # min, max nucleus radius in px
    elongation: tuple[float, float]  # axis ratio range
    darkness: tuple[float, float]  # haematoxylin strength range


STYLES = {
    "normal": TileStyle(nuclei=(30, 75), radius=(3.0, 5.0), elongation=(1.0, 1.5), darkness=(0.45, 0.75)),
    "lymphocytic": TileStyle(nuclei=(50, 100), radius=(2.8, 4.4), elongation=(1.0, 1.3), darkness=(0.55, 0.85)),
    "tumor": TileStyle(nuclei=(35, 80), radius=(3.4, 5.6), elongation=(1.1, 1.8), darkness=(0.5, 0.8)),
}


def draw_tile(label: str, patient_rng: np.random.Generator, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """One synthetic tile of class ``label`` with the patient's stain colours."""
    style = STYLES[label]
    stain = patient_rng.uniform(-25, 25, size=3)
    background = np.clip(np.array([236, 190, 215]) + stain, 0, 255)
    base = rng.normal(0, 9, size=(size, size, 3)) + background
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(1.2))
    draw = ImageDraw.Draw(img)
    # eosin fibres
    for _ in range(rng.integers(4, 9)):
        x0, y0 = rng.uniform(0, size, 2)
        x1, y1 = x0 + rng.normal(0, 60), y0 + rng.normal(0, 60)
        tone = tuple(int(c) for c in np.clip(background - rng.uniform(20, 45, 3) * [0.3, 1.0, 0.5], 0, 255))
        draw.line([(x0, y0), (x1, y1)], fill=tone, width=int(rng.integers(2, 5)))
    nucleus_rgb = np.clip(np.array([70, 40, 120]) + stain * 0.6, 0, 255)
    for _ in range(rng.integers(*style.nuclei)):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(*style.radius)
        e = rng.uniform(*style.elongation)
        dark = rng.uniform(*style.darkness)
        colour = tuple(int(c) for c in background * (1 - dark) + nucleus_rgb * dark)
        angle = rng.uniform(0, np.pi)
        pts = []
        for t in np.linspace(0, 2 * np.pi, 14, endpoint=False):
            wobble = 1 + rng.normal(0, 0.08 if label != "tumor" else 0.14)
            px, py = r * e * np.cos(t) * wobble, r * np.sin(t) * wobble
            pts.append((cx + px * np.cos(angle) - py * np.sin(angle), cy + px * np.sin(angle) + py * np.cos(angle)))
        draw.polygon(pts, fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.6))))
    gain = patient_rng.uniform(0.9, 1.1)
    arr = np.clip(np.asarray(img, dtype=np.float32) * gain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def write_demo_dataset(folder: Path, *, patients: int = 36, tiles_per_patient: int = 6, seed: int = 0) -> Path:
    """Write PNG tiles and ``labels.csv`` (path, tissue, patient_id) under ``folder``; returns the CSV path.

    Each patient contributes tiles of one or two classes, so labels and patients are not the same thing.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        patient_rng = np.random.default_rng([seed, p])
        classes = rng.choice(len(CLASSES), size=2, replace=False)
        for t in range(tiles_per_patient):
            label = CLASSES[int(classes[t % 2])]
            rel = f"tiles/patient{p:03d}_{t}.png"
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_tile(label, patient_rng, np.random.default_rng([seed, p, t])).save(path)
            rows.append({"path": rel, "tissue": label, "patient_id": f"P{p:03d}"})
    csv_path = folder / "labels.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "tissue", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
