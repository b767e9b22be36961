"""The closed vocabularies stored in the tables: split names and activation dtypes (one definition each)."""

from __future__ import annotations

from enum import StrEnum


class Split(StrEnum):
    """A dataset member's split (``dataset_images.split``)."""

    train = "train"
    val = "val"
    test = "test"


class StorageDType(StrEnum):
    """How activations are stored in a segment (``feature_sets.storage_dtype``)."""

    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class ComputeDType(StrEnum):
    """The dtype a model runs in (``feature_sets.compute_dtype``)."""

    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


SPLITS: tuple[str, ...] = tuple(s.value for s in Split)
STORAGE_DTYPES: tuple[str, ...] = tuple(d.value for d in StorageDType)
COMPUTE_DTYPES: tuple[str, ...] = tuple(d.value for d in ComputeDType)
