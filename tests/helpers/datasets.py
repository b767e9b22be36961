"""Helpers for the pipeline tests: small image datasets appended straight into a store."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.schemas import DatasetImageRow, DatasetRow, ImageRow
from tests.helpers.paths import KNEE


def add_image_files(store, dataset: str, files: list[tuple[Path, str]]) -> list[str]:
    """Append images + dataset_images rows for ``(path, split)`` pairs; returns the image hashes."""
    images, members, hashes = [], [], []
    for path, split in files:
        data = path.read_bytes()
        h = hashlib.sha256(data).hexdigest()
        try:
            with Image.open(path) as im:
                size, mode, fmt = im.size, im.mode, im.format or "PNG"
        except OSError:
            size, mode, fmt = (0, 0), "", "unknown"
        images.append(
            ImageRow(
                image_hash=h,
                uri=str(path.resolve()),
                width=size[0],
                height=size[1],
                mode=mode,
                bit_depth=8,
                format=fmt,
                n_bytes=len(data),
            )
        )
        members.append(
            DatasetImageRow(dataset=dataset, image_hash=h, split=split, source_path=path.name, labels=json.dumps({}))
        )
        hashes.append(h)
    store.append("images", images)
    store.append("dataset_images", members)
    store.append("datasets", [DatasetRow(dataset=dataset, format="test", source="tests", split_policy="shipped")])
    return hashes


def make_dataset(store, dataset: str, folder: Path, n: int, *, broken: int = 0, size: int = 24) -> list[str]:
    """``n`` distinct random PNGs (plus ``broken`` files that are not images) as a dataset; returns hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        path = folder / f"img{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        files.append((path, "train" if i % 4 else "test"))
    for i in range(broken):
        path = folder / f"broken{i}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png " + bytes([i]))
        files.append((path, "train"))
    return add_image_files(store, dataset, files)


def add_knee_images(store, dataset: str, n: int) -> list[str]:
    """The first ``n`` shared knee radiographs of labels.csv as a dataset."""
    with open(KNEE / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    return add_image_files(store, dataset, [(KNEE / r["path"], r["split"]) for r in rows])
