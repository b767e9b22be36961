"""The collate step isolates images the processor rejects instead of failing the whole batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from PIL import Image

from medprobe.adapters.adapter import Preprocessor
from medprobe.extractor.loader import Decoded, collate


class RejectsElongated(Preprocessor):
    """Like Qwen2-VL's processor: refuses images whose aspect ratio is too extreme."""

    def __call__(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, torch.Tensor]:
        for im in images:
            if im.width > 4 * im.height:
                raise ValueError(f"absolute aspect ratio must be smaller than 4, got {im.width / im.height}")
        return {"pixel_values": torch.stack([torch.full((3, 4, 4), float(im.height)) for im in images])}


class AlwaysBroken(Preprocessor):
    def __call__(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, torch.Tensor]:
        if len(images) > 1:
            raise RuntimeError("a bug in batching, not in any image")
        return {"pixel_values": torch.zeros(1, 3, 4, 4)}


def _decoded(name: str, size: tuple[int, int]) -> Decoded:
    return Decoded(name, f"/data/{name}.png", Image.new("RGB", size), None, 0.0, 0.0)


def test_rejected_image_becomes_a_failure_and_the_rest_is_kept() -> None:
    items = [_decoded("a", (8, 8)), _decoded("wide", (100, 5)), _decoded("c", (6, 7))]
    batch = collate(items, preprocessor=RejectsElongated(), prompt=None)
    assert batch.image_hashes == ["a", "c"]
    assert batch.inputs["pixel_values"].shape[0] == 2
    assert batch.inputs["pixel_values"][1, 0, 0, 0].item() == 7.0  # rows stay aligned with image_hashes
    assert [(f.image_hash, f.reason) for f in batch.failures] == [("wide", "preprocess")]
    assert "aspect ratio" in batch.failures[0].error
    assert batch.n_refs == 3


def test_every_image_rejected_gives_an_empty_batch() -> None:
    batch = collate([_decoded("wide", (100, 5))], preprocessor=RejectsElongated(), prompt=None)
    assert batch.image_hashes == [] and batch.inputs == {} and len(batch.failures) == 1


def test_a_batch_error_no_image_explains_is_raised() -> None:
    with pytest.raises(RuntimeError, match="batching"):
        collate([_decoded("a", (8, 8)), _decoded("b", (8, 8))], preprocessor=AlwaysBroken(), prompt=None)
