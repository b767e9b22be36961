"""Fixtures: a store filled directly with synthetic features that carry real signal, and the shared data path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medprobe.featurestore import FeatureStore
from medprobe.schemas.tables import DatasetImageRow, DatasetRow, FeatureSetRow, TaskRow

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


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
        FeatureSetRow(
            feature_set_id=fs_id,
            model_id=model_id,
            model_revision="0" * 40,
            adapter="synthetic",
            preprocessing="{}",
            prompt=None,
            pooling="mean",
            layer_semantics="synthetic depth",
            n_layers=layers,
            hidden_sizes=[dim] * layers,
            compute_dtype="fp32",
            storage_dtype="float32",
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


@pytest.fixture
def synth_store(tmp_path):
    """A local store with one synthetic feature set over 240 labelled images (3 tasks)."""
    store = FeatureStore.open(str(tmp_path / "store"))
    fill_store(store)
    return store


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (it lives beside the checkout)")
    return SHARED
