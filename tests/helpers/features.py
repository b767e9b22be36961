"""Feature sets and activations for tests: the one feature-set factory, deterministic activations, image hashes,
and a store filled with synthetic features that carry class signal (for the trainer)."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from medprobe.featurestore import FeatureStore
from medprobe.schemas import DatasetImageRow, DatasetRow, FeatureSetRow, TaskRow


def image_hash(key: object) -> str:
    """A sha256 hex digest standing in for an image's hash."""
    return hashlib.sha256(str(key).encode()).hexdigest()


def feature_set_row(
    feature_set_id: str = "fs-test",
    n_layers: int = 4,
    hidden: int | list[int] = 16,
    storage_dtype: str = "float16",
    **fields: object,
) -> FeatureSetRow:
    """The one feature-set factory of the tests: a valid row; ``fields`` override any other column."""
    hidden_sizes = hidden if isinstance(hidden, list) else [hidden] * n_layers
    row: dict[str, object] = {
        "feature_set_id": feature_set_id,
        "model_id": "test/model",
        "model_revision": "0" * 40,
        "adapter": "test",
        "preprocessing": "{}",
        "prompt": None,
        "pooling": "mean",
        "layer_semantics": "index i = output of block i",
        "n_layers": n_layers,
        "hidden_sizes": hidden_sizes,
        "compute_dtype": "fp32",
        "storage_dtype": storage_dtype,
    }
    return FeatureSetRow(**{**row, **fields})


def activation(h: str, layer: int, hidden: int, salt: int = 0) -> np.ndarray:
    """The float32 activation a test writer commits for image ``h`` at ``layer`` (derived from the hash)."""
    seed = int(h[:15], 16) * 1009 + layer * 31 + salt
    return np.random.default_rng(seed).standard_normal(hidden).astype(np.float32)


def activations(hashes: list[str], layer: int, hidden: int, salt: int = 0) -> np.ndarray:
    return np.stack([activation(h, layer, hidden, salt) for h in hashes]) if hashes else np.empty((0, hidden))


def stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """What reading back ``x`` stored as ``dtype`` gives (bfloat16: rounded to nearest even, as float32)."""
    if dtype == "bfloat16":
        from medprobe.featurestore.segments import from_bfloat16_bits, to_bfloat16_bits

        return from_bfloat16_bits(to_bfloat16_bits(x))
    return np.asarray(x, dtype=dtype)


def open_with_feature_set(url: str, row: FeatureSetRow | None = None) -> FeatureStore:
    store = FeatureStore.open(url)
    store.register_feature_set(row or feature_set_row())
    return store


def synthetic_features(n: int = 240, layers: int = 4, dim: int = 24, seed: int = 0):
    """Labels of three tasks and per-layer features whose class signal grows with depth."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n // 2), 2)
    grade = rng.integers(0, 3, n)
    findings = (rng.random((n, 3)) < [0.3, 0.4, 0.5]).astype(int)
    findings[:, 0] |= grade == 2
    arrays = {}
    for layer in range(layers):
        strength = 0.4 + 0.6 * layer
        X = rng.normal(size=(n, dim)) * rng.uniform(0.5, 3, dim) + rng.normal(size=dim) * 4
        X[:, :3] += strength * np.eye(3)[grade]
        X[:, 3:6] += strength * findings
        X[:, 6] += 0.5 * rng.normal(size=n // 2).repeat(2)  # patient effect
        arrays[layer] = X.astype(np.float32)
    return patients, grade, findings, arrays


def fill_store(
    store: FeatureStore,
    *,
    n: int = 240,
    layers: int = 4,
    dim: int = 24,
    seed: int = 0,
    fs_id: str = "fs-synth",
    model_id: str = "synthetic/model",
    offset: float = 0.0,
) -> str:
    """Register a feature set and (once) the 'synth' dataset, tasks and images; commit the features."""
    patients, grade, findings, arrays = synthetic_features(n, layers, dim, seed)
    hashes = [hashlib.sha256(f"img{i}".encode()).hexdigest() for i in range(n)]
    store.register_feature_set(
        feature_set_row(
            fs_id,
            n_layers=layers,
            hidden=dim,
            storage_dtype="float32",
            model_id=model_id,
            adapter="synthetic",
            layer_semantics="synthetic depth",
        )
    )
    if store.table("datasets").num_rows == 0:
        policy = "generated:test=0.3,val=0.1,seed=0,group=patient_id"
        store.append("datasets", [DatasetRow(dataset="synth", format="synthetic", source="test", split_policy=policy)])
        names = ["none", "mild", "severe"]
        store.append(
            "tasks",
            [
                TaskRow(
                    dataset="synth",
                    task="grade",
                    type="multiclass",
                    label_columns=["grade"],
                    class_names=names,
                    primary_metric="macro_auc",
                ),
                TaskRow(
                    dataset="synth",
                    task="severe",
                    type="binary",
                    label_columns=["severe"],
                    class_names=["no", "yes"],
                    primary_metric="macro_auc",
                ),
                TaskRow(
                    dataset="synth",
                    task="findings",
                    type="multilabel",
                    label_columns=["a", "b", "c"],
                    class_names=["a", "b", "c"],
                    primary_metric="macro_auc",
                ),
            ],
        )
        u = np.random.default_rng(99).random(n // 2).repeat(2)
        split = np.where(u < 0.3, "test", np.where(u < 0.4, "val", "train"))
        rows = []
        for i, h in enumerate(hashes):
            labels = {
                "grade": names[grade[i]],
                "severe": "yes" if grade[i] == 2 else "no",
                "findings": [f for f, v in zip("abc", findings[i], strict=True) if v],
            }
            rows.append(
                DatasetImageRow(
                    dataset="synth",
                    image_hash=h,
                    split=str(split[i]),
                    group_id=f"p{patients[i]}",
                    source_path=f"img{i}.png",
                    labels=json.dumps(labels),
                )
            )
        store.append("dataset_images", rows)
    store.commit_segment(fs_id, hashes, {k: v + offset for k, v in arrays.items()}, dtype="float32")
    return fs_id
