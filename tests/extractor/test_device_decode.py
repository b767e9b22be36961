"""Decoding and preprocessing on the model's device (``--decode torchvision``): run here with torchvision on the CPU,
the pixels and the stored features equal the PIL path's within the resize's rounding; other formats, truncated and
corrupt files take the CPU decoder and fail as they do on the PIL path. The CUDA (nvJPEG) tests skip without a GPU."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.adapters.device_decode import (
    decode_batch,
    encoded_tensor,
    pil_to_chw,
    torchvision_available,
    travels_encoded,
)
from medprobe.adapters.loading import load_adapter
from medprobe.errors import InvalidInputError
from medprobe.extractor.loader import decode_on_cpu
from medprobe.extractor.pipeline import ExtractOptions, extract, resolve_decode
from medprobe.featurestore import FeatureStore
from medprobe.imaging import ImageReadError, decode_image, open_image_header
from tests.helpers.datasets import add_image_files

pytestmark = pytest.mark.skipif(not torchvision_available(), reason="needs torchvision")
CPU = torch.device("cpu")


def _jpeg(arr: np.ndarray, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, **params)
    return buf.getvalue()


def _images(seed: int = 0) -> dict[str, bytes]:
    """Plain RGB and grayscale JPEGs of different sizes, plus the kinds that must take the CPU decoder."""
    rng = np.random.default_rng(seed)
    smooth = np.tile(np.linspace(0, 255, 130).astype(np.uint8), (100, 1))
    rotated = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (110, 96, 3), dtype=np.uint8)).save(png, "PNG")
    rgb = _jpeg(rng.integers(0, 255, (128, 104, 3), dtype=np.uint8))  # all larger than the tiny models' inputs
    return {
        "rgb.jpg": rgb,
        "rgb_large.jpg": _jpeg(rng.integers(0, 255, (120, 150, 3), dtype=np.uint8)),
        "gray.jpg": _jpeg(smooth),
        "progressive.jpg": _jpeg(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8), progressive=True),
        "rotated.jpg": buf.getvalue(),
        "image.png": png.getvalue(),
        "truncated.jpg": rgb[: len(rgb) // 2],
    }


def test_only_plain_complete_jpegs_travel_encoded() -> None:
    images = _images()
    kinds = {name: travels_encoded(open_image_header(data, name)) for name, data in images.items()}
    assert kinds["rgb.jpg"] and kinds["gray.jpg"] and kinds["rgb_large.jpg"]
    assert not kinds["rotated.jpg"] and not kinds["image.png"] and not kinds["progressive.jpg"]


def test_decode_batch_equals_pil_and_reports_a_corrupt_file_like_the_pil_path() -> None:
    images = _images()
    names = ["rgb.jpg", "gray.jpg", "image.png", "rgb_large.jpg"]
    items = [encoded_tensor(images[n]) if n.endswith(".jpg") else pil_to_chw(decode_image(images[n], source=n))
             for n in names]  # fmt: skip
    encoded = [n.endswith(".jpg") for n in names]
    result = decode_batch(items, encoded, names, CPU, decode_on_cpu)
    assert result.kept == [0, 1, 2, 3] and not result.failed
    for name, got in zip(names, result.images, strict=True):
        ref = pil_to_chw(decode_image(images[name], source=name))
        assert got.shape == ref.shape and got.dtype == torch.uint8
        assert int((got.int() - ref.int()).abs().max()) == 0, name  # libjpeg on both sides
    corrupt = bytearray(images["rgb.jpg"])
    corrupt[200:260] = b"\xff" * 60  # a broken scan: the batched decode fails, then this file alone
    not_jpeg = b"\xff\xd8\xff" + b"0" * 50
    bad = [encoded_tensor(images["rgb.jpg"]), encoded_tensor(bytes(corrupt)), encoded_tensor(not_jpeg)]
    result = decode_batch(bad, [True] * 3, ["a.jpg", "b.jpg", "c.jpg"], CPU, decode_on_cpu)
    assert 0 in result.kept and 2 in result.failed and "c.jpg" in result.failed[2][1]
    for i, data in ((1, bytes(corrupt)), (2, not_jpeg)):
        try:
            decode_image(data, source="x")
        except ImageReadError as e:  # the PIL path refuses it: the device path fails it with the same reason
            assert result.failed[i][0] == e.reason
        else:  # the PIL path recovers it: so does the device path
            assert i in result.kept


@pytest.mark.parametrize("name", ["clip", "siglip", "dinov2", "timm-vit", "timm-convnext", "open_clip-vit"])
def test_device_preprocessing_equals_the_processor_within_rounding(name: str) -> None:
    adapter = load_adapter(f"tiny-random/{name}")
    preprocess = adapter.device_preprocess()
    assert preprocess is not None
    images = _images()
    names = ["rgb.jpg", "gray.jpg", "rgb_large.jpg", "image.png"]
    pils = [decode_image(images[n], source=n) for n in names]
    ref = adapter.preprocess(pils, None)["pixel_values"]
    got = preprocess([pil_to_chw(p) for p in pils])["pixel_values"]
    assert got.shape == ref.shape
    std = float(torch.as_tensor(_std_of(adapter)).min())
    one_level = 1.0 / 255 / std
    levels = (got - ref).abs() / one_level
    # the two bicubic resamplers round to uint8 differently: on these noise images (the worst case) almost every value
    # is within one level, a few high-contrast pixels within eight
    assert float((levels <= 1.01).float().mean()) >= 0.99 and float(levels.mean()) <= 0.5
    assert float(levels.max()) <= 8.01
    # an image smaller than the input is enlarged: PIL's and torchvision's bicubic upsampling kernels differ a little
    small = [Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 26, 3), dtype=np.uint8))]
    diff = preprocess([pil_to_chw(p) for p in small])["pixel_values"] - adapter.preprocess(small, None)["pixel_values"]
    assert float(diff.abs().mean()) <= 2 * one_level and float(diff.abs().max()) <= 32 * one_level


def _std_of(adapter) -> list[float]:
    pre = adapter.preprocessor
    if hasattr(pre, "image_processor"):
        return list(pre.image_processor.image_std)
    return [float(s) for t in pre.transform.transforms if hasattr(t, "std") for s in t.std]


def _dataset(store: FeatureStore, folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in _images().items():
        path = folder / name
        path.write_bytes(data)
        files.append((path, "train"))
    hashes = add_image_files(store, "toy", files)
    return dict(zip(hashes, [p.name for p, _ in files], strict=True))


@pytest.mark.parametrize("model", ["tiny-random/clip", "tiny-random/timm-vit"])
def test_the_torchvision_path_stores_what_the_pil_path_stores(tmp_path: Path, model: str) -> None:
    stores = {}
    summaries = {}
    for decode in ("pil", "torchvision"):
        store = FeatureStore.open(str(tmp_path / decode))
        _dataset(store, tmp_path / f"img-{decode}")
        opts = ExtractOptions(dataset="toy", model=model, workers=0, batch_size=3, decode=decode)
        summaries[decode] = extract(store, opts, show_progress=False)
        stores[decode] = store
    pil, tv = summaries["pil"], summaries["torchvision"]
    assert tv["decode"] == "torchvision on cpu" and pil["decode"].startswith("pil")
    assert tv["images_committed"] == pil["images_committed"] == 6 and tv["failures"] == pil["failures"] == 1
    reasons = [s.sql("SELECT reason FROM failures").column(0).to_pylist() for s in stores.values()]
    assert reasons[0] == reasons[1] == ["truncated"]
    fs = pil["feature_sets"]
    assert fs == tv["feature_sets"]  # the same feature set: the decode path is not part of the features' identity
    layer = int(pil["layers"][-1])
    for pooling, fs_id in fs.items():
        hashes = stores["pil"].sql("SELECT image_hash FROM raw_activations ORDER BY image_hash").column(0).to_pylist()
        hashes = sorted(set(hashes))
        a = stores["pil"].read(fs_id, layer, hashes).astype(np.float32)
        b = stores["torchvision"].read(fs_id, layer, hashes).astype(np.float32)
        if model == "tiny-random/clip":  # transformers' torchvision backend on both paths: the same pixels
            np.testing.assert_array_equal(b, a, err_msg=pooling)
        else:  # timm's transform: PIL's resize on one path, torchvision's on the other (a level apart)
            np.testing.assert_allclose(b, a, atol=0.02 * float(np.abs(a).max()), err_msg=pooling)
    assert set(tv["stage_seconds"]) >= {"read", "decode", "preprocess", "forward", "write"}


def test_decode_choices_are_resolved_and_refused_with_the_reason() -> None:
    clip = load_adapter("tiny-random/clip")
    auto = resolve_decode(clip, ExtractOptions(dataset="d", model="m"))
    assert auto.preprocess is None and "model runs on the CPU" in auto.description
    assert resolve_decode(clip, ExtractOptions(dataset="d", model="m", decode="torchvision")).preprocess is not None
    with pytest.raises(InvalidInputError, match="--decode torchvision: --study-preprocessing"):
        resolve_decode(clip, ExtractOptions(dataset="d", model="m", decode="torchvision", study_preprocessing=True))
    llava = load_adapter("tiny-random/llava")
    with pytest.raises(InvalidInputError, match="has no tensor form"):
        resolve_decode(llava, ExtractOptions(dataset="d", model="m", decode="torchvision"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_matches_the_cpu_decoder_and_the_pipeline_runs_on_cuda(tmp_path: Path) -> None:
    images = _images()
    names = ["rgb.jpg", "gray.jpg", "rgb_large.jpg"]
    items = [encoded_tensor(images[n]) for n in names]
    gpu = decode_batch(items, [True] * 3, names, torch.device("cuda"), decode_on_cpu)
    cpu = decode_batch(items, [True] * 3, names, CPU, decode_on_cpu)
    for g, c in zip(gpu.images, cpu.images, strict=True):
        assert g.is_cuda and g.shape == c.shape
        assert float((g.cpu().float() - c.float()).abs().mean()) < 1.0  # IDCT/upsampling differ by a level or two
    store = FeatureStore.open(str(tmp_path / "s"))
    _dataset(store, tmp_path / "img")
    summary = extract(store, ExtractOptions(dataset="toy", model="tiny-random/clip", workers=0), show_progress=False)
    assert summary["decode"].startswith("torchvision on cuda") and summary["images_committed"] == 6
