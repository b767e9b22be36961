"""Layouts that hold pixels in NumPy arrays (no image files): ``medmnist`` (.npz) and ``pannuke`` (.npy folds).

Their pixels are PNG-encoded into the store on ingest (``images.in_store``), so the image hash is the sha256 of
that PNG.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from medprobe.errors import InvalidInputError
from medprobe.ingestion.records import (
    FormatOptions,
    ParsedSource,
    Problem,
    SourceRecord,
    infer_type,
)
from medprobe.schemas import SPLITS

# PanNuke masks.npy: (N, 256, 256, 6), one channel per nucleus type holding instance ids; the last is background.
PANNUKE_MIN_NEOPLASTIC = 10  # malignant: more than 10 neoplastic nuclei ...
PANNUKE_MIN_SHARE = 0.30  # ... making up more than 30 % of all nuclei
PANNUKE_DEFAULT_FOLDS = {"1": "train", "2": "val", "3": "test"}


# --------------------------------------------------------------------------- MedMNIST
def parse_medmnist(source: Path, options: FormatOptions) -> ParsedSource:
    """A MedMNIST ``.npz``: ``{train,val,test}_images`` (N,H,W[,3]) uint8 and ``*_labels`` (N,1) or (N,K)."""
    task = options.task or "label"
    try:
        npz = np.load(source, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InvalidInputError(f"{source}: not a readable .npz file: {e}") from e
    with npz:
        keys = set(npz.files)
        splits = [s for s in SPLITS if f"{s}_images" in keys]
        if not splits:
            raise InvalidInputError(f"{source}: no train_images/val_images/test_images arrays; keys: {sorted(keys)}")
        arrays = {}
        for s in splits:
            if f"{s}_labels" not in keys:
                raise InvalidInputError(f"{source}: {s}_images has no {s}_labels array")
            images, labels = npz[f"{s}_images"], npz[f"{s}_labels"]
            if labels.ndim == 1:
                labels = labels[:, None]
            if len(images) != len(labels) or images.ndim not in (3, 4):
                raise InvalidInputError(
                    f"{source}: {s}_images {images.shape} and {s}_labels {labels.shape} do not match"
                )
            arrays[s] = (as_image_array(images, f"{source}:{s}_images"), labels)
    width = {a[1].shape[1] for a in arrays.values()}
    if len(width) != 1:
        raise InvalidInputError(f"{source}: label arrays have different widths {sorted(width)}")
    multilabel = width.pop() > 1
    valid = {s: _valid_labels(labels, multilabel) for s, (_, labels) in arrays.items()}
    if multilabel:
        n_classes = arrays[splits[0]][1].shape[1]
    else:
        tops = [int(a[1][valid[s], 0].astype(np.int64).max(initial=-1)) for s, a in arrays.items()]
        n_classes = max(tops, default=-1) + 1
    names = list(options.class_names) or [str(i) for i in range(n_classes)]
    if options.class_names and not multilabel:
        n_classes = len(names)  # declared classes: a label past them is a bad row, not a new class
    elif len(names) < n_classes:
        raise InvalidInputError(f"{source}: {n_classes} classes but --class-names gives {len(names)}")

    records, problems = [], []
    for s in splits:
        images, labels = arrays[s]
        for i in range(len(images)):
            where = f"{source}:{s}_labels[{i}]"
            if not valid[s][i]:
                problems.append(Problem(where, "bad_row", f"label {labels[i].tolist()} is not a class index "
                                        "(a non-negative integer; multilabel: 0/1 flags)"))  # fmt: skip
                continue
            if multilabel:
                value: object = [names[k] for k in np.flatnonzero(labels[i])]
            elif int(labels[i, 0]) >= n_classes:
                problems.append(Problem(where, "bad_row", f"label {int(labels[i, 0])} is past the {n_classes} "
                                        f"declared classes {names}"))  # fmt: skip
                continue
            else:
                value = names[int(labels[i, 0])]
            records.append(SourceRecord(source_path=f"{s}/{i:06d}", labels={task: value}, split=s, pixels=images[i]))
    spec = (
        options.task_for(task, "multilabel", names) if multilabel else options.task_for(task, infer_type(names), names)
    )
    return ParsedSource(records=records, tasks=[spec], stratify_task=task, problems=problems)


def _valid_labels(labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """Per row: every label is a finite non-negative integer (multilabel: 0 or 1)."""
    values = np.asarray(labels, dtype=np.float64)
    ok = np.isfinite(values) & (values >= 0) & (values == np.round(values))
    if multilabel:
        ok &= values <= 1
    return ok.all(axis=1)


def as_image_array(images: np.ndarray, where: str) -> np.ndarray:
    """Pixel arrays as uint8 (uint16 kept), decided once for the whole array so every image scales alike.

    Floats in [0, 1] are scaled by 255 (MedMNIST-style normalised images); floats in [0, 255] are rounded;
    integers must lie in 0..255 (uint16: 0..65535). Anything else is refused naming the array and its range.
    """
    arr = np.asarray(images)
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{where}: pixel arrays of dtype {arr.dtype} cannot be images")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InvalidInputError(f"{where}: pixel values include NaN or infinity")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0 and hi <= 1:
        return np.rint(arr.astype(np.float64) * 255).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return np.rint(arr).astype(np.uint8)
    raise InvalidInputError(
        f"{where}: pixel values span [{lo:g}, {hi:g}]; expected uint8/uint16, or floats in [0, 1] or [0, 255]"
    )


# --------------------------------------------------------------------------- PanNuke
def pannuke_label(mask: np.ndarray, *, share: str = "area") -> str | None:
    """``malignant`` / ``benign`` / None (dropped) for one PanNuke mask (H, W, 6) of instance ids.

    Malignant: more than 10 neoplastic nuclei that make up more than 30 % of all nuclei (by pixel area, or by
    nucleus count with ``share="count"``). Benign: no neoplastic nucleus. Anything in between is dropped.
    """
    cells = np.asarray(mask[..., :5])
    neo = cells[..., 0]
    neo_ids = np.unique(neo[neo > 0])
    if neo_ids.size == 0:
        return "benign"
    if neo_ids.size <= PANNUKE_MIN_NEOPLASTIC:
        return None
    if share == "count":
        total = sum(np.unique(cells[..., c][cells[..., c] > 0]).size for c in range(5))
        fraction = neo_ids.size / max(total, 1)
    else:
        fraction = float((neo > 0).sum()) / max(int((cells > 0).any(axis=-1).sum()), 1)
    return "malignant" if fraction > PANNUKE_MIN_SHARE else None


def _fold_number(path: Path) -> str | None:
    for part in reversed(path.parts[:-1]):
        m = re.fullmatch(r"fold[ _-]?(\d+)", part, re.IGNORECASE)
        if m:
            return m.group(1)
    return None


def _pannuke_folds(root: Path) -> dict[str, dict[str, Path]]:
    """``{fold: {"images": p, "masks": p, "types": p}}`` from the PanNuke zips' ``Fold N/{images,masks}/foldN/``."""
    folds: dict[str, dict[str, Path]] = {}
    for name in ("images", "masks", "types"):
        for path in sorted(root.rglob(f"{name}.npy")):
            fold = _fold_number(path)
            if fold is None:
                raise InvalidInputError(f"{path}: cannot tell which fold it belongs to (no 'foldN' folder above it)")
            folds.setdefault(fold, {})[name] = path
    if not folds:
        raise InvalidInputError(f"{root}: no images.npy / masks.npy / types.npy found (unzip PanNuke's fold_N.zip)")
    for fold, files in folds.items():
        missing = {"images", "masks", "types"} - set(files)
        if missing:
            raise InvalidInputError(f"{root}: fold {fold} lacks {sorted(missing)} (.npy)")
    return folds


def parse_pannuke(source: Path, options: FormatOptions) -> ParsedSource:
    """PanNuke folds: task ``malignancy`` (malignant / benign, see :func:`pannuke_label`) and ``tissue``."""
    if options.neoplastic_share not in ("area", "count"):
        raise InvalidInputError(f"--neoplastic-share must be area or count, not {options.neoplastic_share!r}")
    fold_splits = options.fold_splits or PANNUKE_DEFAULT_FOLDS
    folds = _pannuke_folds(source)
    records: list[SourceRecord] = []
    excluded: dict[str, int] = {}
    tissues: set[str] = set()
    for fold in sorted(folds, key=int):
        if fold not in fold_splits:
            raise InvalidInputError(f"fold {fold} has no split; pass --fold-splits like 1=train,2=val,3=test")
        files = folds[fold]
        images = np.load(files["images"], mmap_mode="r")
        masks = np.load(files["masks"], mmap_mode="r")
        types = np.load(files["types"], allow_pickle=False)
        if not (len(images) == len(masks) == len(types)) or images.ndim != 4 or masks.shape[-1] != 6:
            raise InvalidInputError(
                f"fold {fold}: images {images.shape}, masks {masks.shape}, types {types.shape} do not match "
                "the PanNuke layout (N,256,256,3), (N,256,256,6), (N,)"
            )
        for i in range(len(images)):
            label = pannuke_label(masks[i], share=options.neoplastic_share)
            if label is None:
                key = "pannuke: 1-10 neoplastic nuclei or <= 30 % of nuclei"
                excluded[key] = excluded.get(key, 0) + 1
                continue
            tissue = str(types[i])
            tissues.add(tissue)
            records.append(
                SourceRecord(
                    source_path=f"fold{fold}/images.npy[{i}]",
                    labels={"malignancy": label, "tissue": tissue},
                    split=fold_splits[fold],
                    pixels=images[i],  # a lazy view of the memory-mapped fold; PNG-encoded by the ingest workers
                )
            )
    tasks = [
        options.task_for("malignancy", "binary", ("benign", "malignant")),
        options.task_for("tissue", "multiclass", sorted(tissues)),
    ]
    return ParsedSource(records=records, tasks=tasks, stratify_task="malignancy", excluded=excluded)
