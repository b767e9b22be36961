"""Decoding and inspection of every supported image kind, and each unreadable-input category."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medprobe.imaging import (
    ImageReadError,
    decode_image,
    inspect_image,
    read_file_bytes,
)
from tests.helpers.images import image_bytes, png_bytes, png_with_huge_header
from tests.helpers.paths import SHARED_DATA


def _gradient(h: int, w: int, top: int, dtype=np.uint8) -> np.ndarray:
    return (np.linspace(0, top, h * w).reshape(h, w)).astype(dtype)


def test_8bit_grayscale_png_decodes_to_L_unchanged() -> None:
    arr = _gradient(12, 20, 255)
    data = png_bytes(arr)
    info = inspect_image(data, source="g.png")
    assert (info.width, info.height, info.mode, info.bit_depth, info.format) == (20, 12, "L", 8, "PNG")
    img = decode_image(data, source="g.png")
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), arr)


def test_16bit_png_scales_by_full_range_or_relative_to_max() -> None:
    arr = _gradient(10, 10, 4095, np.uint16)  # 12-bit data stored in a 16-bit PNG
    data = image_bytes(Image.fromarray(arr), "PNG")
    info = inspect_image(data, source="x.png")
    assert info.mode.startswith("I;16") and info.bit_depth == 16
    default = np.asarray(decode_image(data, source="x.png"))
    assert default.dtype == np.uint8 and default.max() == round(4095 * 255 / 65535)
    study = np.asarray(decode_image(data, source="x.png", study_preprocessing=True))
    assert study.max() == 255 and study.min() == 0  # relative to the image's own maximum


def test_16bit_tiff_and_8bit_tiff() -> None:
    arr16 = _gradient(8, 9, 60000, np.uint16)
    data16 = image_bytes(Image.fromarray(arr16), "TIFF")
    info = inspect_image(data16, source="x.tif")
    assert info.format == "TIFF" and info.bit_depth == 16
    assert np.asarray(decode_image(data16, source="x.tif")).max() == round(60000 / 257)
    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    data8 = image_bytes(Image.fromarray(rgb), "TIFF")
    out = decode_image(data8, source="y.tif")
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), rgb)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("P", "RGB"), ("RGBA", "RGB"), ("LA", "L"), ("1", "L"), ("CMYK", "RGB"), ("RGB", "RGB")],
)
def test_modes_become_L_or_RGB(mode: str, expected: str) -> None:
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (10, 12, 3), dtype=np.uint8))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    src = rgb.convert(mode) if mode != "LA" else rgb.convert("L").convert("LA")
    data = image_bytes(src, fmt)
    assert inspect_image(data, source="m").mode == mode
    out = decode_image(data, source="m")
    assert out.mode == expected and out.size == (12, 10)
    if mode in ("P", "RGBA"):
        np.testing.assert_array_equal(np.asarray(out), np.asarray(src.convert("RGB")))


def test_jpeg_exif_orientation_is_applied() -> None:
    img = Image.fromarray(np.zeros((10, 30, 3), dtype=np.uint8))  # 30 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = image_bytes(img, "JPEG", exif=exif.tobytes())
    assert inspect_image(data, source="o.jpg").width == 30
    assert decode_image(data, source="o.jpg").size == (10, 30)


def test_study_preprocessing_caps_the_longest_side() -> None:
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (1000, 2500), dtype=np.uint8))
    data = image_bytes(img, "PNG")
    assert decode_image(data, source="big.png").size == (2500, 1000)
    assert decode_image(data, source="big.png", study_preprocessing=True).size == (1024, 410)
    jpeg = image_bytes(img.convert("RGB"), "JPEG")
    assert decode_image(jpeg, source="big.jpg", study_preprocessing=True).size == (1024, 410)


def test_shared_knee_png_is_grayscale() -> None:
    folder = SHARED_DATA / "knee-oa-kl" / "images"
    if not folder.is_dir():
        pytest.skip("../shared/data/knee-oa-kl is absent (shared data lives beside the checkout)")
    path = sorted(folder.glob("*.png"))[0]
    data = path.read_bytes()
    info = inspect_image(data, source=str(path))
    assert (info.mode, info.bit_depth, info.width, info.height) == ("L", 8, 224, 224)
    assert decode_image(data, source=str(path)).mode == "L"


# --------------------------------------------------------------------------- DICOM
def _dicom_bytes(pixels: np.ndarray, **attrs) -> bytes:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_rescale_window_and_monochrome1() -> None:
    raw = np.array([[0, 100, 200, 300], [400, 500, 600, 4000]], dtype=np.uint16)
    # slope 2, intercept -100 -> values -100 .. 7900; window centre 500 width 1000 -> [0, 1000] maps to 0..255
    data = _dicom_bytes(raw, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=500, WindowWidth=1000)
    info = inspect_image(data, source="a.dcm")
    assert (info.format, info.width, info.height, info.bit_depth) == ("DICOM", 4, 2, 12)
    out = np.asarray(decode_image(data, source="a.dcm"))
    values = raw * 2.0 - 100
    expected = np.clip(((values - 499.5) / 999 + 0.5), 0, 1) * 255
    np.testing.assert_allclose(out, np.rint(expected), atol=1)
    assert out[0, 0] == 0 and out[1, 3] == 255
    inverted = np.asarray(
        decode_image(
            _dicom_bytes(
                raw,
                RescaleSlope=2,
                RescaleIntercept=-100,
                WindowCenter=500,
                WindowWidth=1000,
                PhotometricInterpretation="MONOCHROME1",
            ),
            source="b.dcm",
        )
    )
    np.testing.assert_array_equal(inverted, 255 - out)


def test_dicom_without_window_scales_min_to_max() -> None:
    raw = np.array([[10, 20], [30, 110]], dtype=np.uint16)
    out = np.asarray(decode_image(_dicom_bytes(raw), source="c.dcm"))
    np.testing.assert_array_equal(out, np.rint((raw - 10) / 100 * 255).astype(np.uint8))


# --------------------------------------------------------------------------- unreadable inputs
def _reason(data: bytes, verify: str = "structure") -> str:
    with pytest.raises(ImageReadError) as e:
        inspect_image(data, source="bad", verify=verify)
    assert "bad" in str(e.value)
    return e.value.reason


def test_zero_bytes_is_empty() -> None:
    assert _reason(b"") == "empty"


def test_not_an_image() -> None:
    assert _reason(b"patient_id,label\n1,0\n" * 10) == "not_an_image"


def test_truncated_png_and_jpeg() -> None:
    png = png_bytes(np.random.default_rng(3).integers(0, 255, (64, 64), dtype=np.uint8))
    assert _reason(png[: len(png) // 2]) == "truncated"
    assert _reason(png[:-12]) == "truncated"  # cut exactly before IEND
    rgb = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpeg = image_bytes(rgb, "JPEG")
    assert _reason(jpeg[: len(jpeg) // 2]) == "truncated"
    assert inspect_image(jpeg, source="ok.jpg").format == "JPEG"
    with pytest.raises(ImageReadError) as e:
        decode_image(png[: len(png) // 2], source="cut.png")
    assert e.value.reason == "truncated"


def test_header_only_inspection_does_not_read_pixels() -> None:
    png = png_bytes(np.random.default_rng(3).integers(0, 255, (64, 64), dtype=np.uint8))
    assert inspect_image(png[: len(png) // 2], source="cut.png", verify="header").width == 64


def test_decompression_bomb_is_refused_before_decoding() -> None:
    assert _reason(png_with_huge_header()) == "decompression_bomb"
    assert _reason(png_with_huge_header(20_000, 20_000), verify="header") == "decompression_bomb"
    small = png_bytes()
    with pytest.raises(ImageReadError) as e:
        decode_image(small, source="s.png", max_pixels=100)
    assert e.value.reason == "decompression_bomb"


def test_a_raised_pixel_limit_is_honoured(monkeypatch) -> None:
    from PIL import Image as PILImage

    from medprobe.imaging import set_pixel_limit

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", PILImage.MAX_IMAGE_PIXELS)  # restored after the test
    huge = png_with_huge_header(20_000, 20_000)  # 400 M pixels: above twice PIL's default limit
    set_pixel_limit(500_000_000)
    info = inspect_image(huge, source="big.png", verify="header", max_pixels=500_000_000)
    assert (info.width, info.height) == (20_000, 20_000)


def test_missing_and_empty_files(tmp_path) -> None:
    with pytest.raises(ImageReadError) as e:
        read_file_bytes(str(tmp_path / "nope.png"))
    assert e.value.reason == "missing"
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError) as e:
        read_file_bytes(str(tmp_path / "zero.png"))
    assert e.value.reason == "empty"
