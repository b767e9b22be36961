"""Stored keys never change: ids pinned to what the code computed before the canonical-JSON helpers were merged."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from medprobe.adapters.adapter import ModelIdentity
from medprobe.extractor.feature_set import feature_set_row
from medprobe.featurestore.ids import canonical_json, config_json, stable_hash


class Resample(Enum):
    BICUBIC = 3


def _identity() -> ModelIdentity:
    preprocessing = config_json({"image_processor": {"size": 224, "resample": Resample.BICUBIC, "note": "Röntgen"}})
    return ModelIdentity(
        model_id="org/model-ü",
        model_revision="abc123",
        adapter="vision_tower",
        preprocessing=preprocessing,
        layer_semantics="block i",
        n_layers=12,
        hidden_sizes=(768,) * 12,
        supported_poolings=("cls", "image_mean"),
        default_pooling="cls",
        takes_prompt=False,
    )


def test_config_json_is_the_feature_set_preprocessing_serialisation() -> None:
    cfg = {
        "size": {"height": 224},
        "mean": [0.5, 0.25],
        "resample": Resample.BICUBIC,
        "name": "Röntgen",
        "path": Path("/x"),
    }
    assert config_json(cfg) == (
        '{"mean":[0.5,0.25],"name":"R\\u00f6ntgen","path":"PosixPath(\'/x\')","resample":"<Resample.BICUBIC: 3>",'
        '"size":{"height":224}}'
    )


def test_canonical_json_of_rows_and_params() -> None:
    value = {"labels": {"kl": "2"}, "note": "Röntgen é", "p": Path("/x"), "c": [1e-4, 1.0]}
    assert canonical_json(value) == '{"c":[0.0001,1.0],"labels":{"kl":"2"},"note":"Röntgen é","p":"/x"}'
    assert stable_hash({"a": "ü", "b": [1, 2.5, None]}) == "91ff63a7ddb19a1b"


def test_feature_set_ids_are_unchanged() -> None:
    ident = _identity()
    a = feature_set_row(ident, prompt="Describe this X-ray — knee.", pooling="cls", compute_dtype="fp32",
                        storage_dtype="float16")  # fmt: skip
    b = feature_set_row(ident, prompt=None, pooling="image_mean", compute_dtype="bf16", storage_dtype="bfloat16")
    assert (a.feature_set_id, b.feature_set_id) == ("fs-2e3e1da4efb694ca", "fs-8aea5a3601172c7c")


def test_efficientnet_lite0_feature_set_id_is_unchanged() -> None:
    from medprobe.adapters.loading import load_adapter

    ident = load_adapter("efficientnet-lite0").identity
    row = feature_set_row(
        ident, prompt=None, pooling=ident.default_pooling, compute_dtype="fp32", storage_dtype="float16"
    )
    assert row.feature_set_id == "fs-2375180e802eb847"
