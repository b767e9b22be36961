"""The one place where image bytes become pixels: used by ingest (inspection) and the extractor (decoding).

Every failure is an :class:`ImageReadError` with a short ``reason`` category (see ``REASONS``) that ingest
records in the ``failures`` table. Decompression bombs are refused explicitly: an image whose header claims
more than ``max_pixels`` pixels is never decoded (PIL's own ``DecompressionBombError`` is mapped to the same
reason, and PNG text-chunk bombs too).

Decoded images are 8-bit ``L`` (grayscale) or ``RGB``: palette, RGBA, LA, CMYK, YCbCr and bi-level images
become RGB or L, EXIF orientation is applied, high-bit-depth images (16-bit PNG/TIFF, 32-bit integer or float
TIFF, DICOM) are scaled to 8 bits. DICOM needs the optional extra ``medprobe[dicom]`` (pydicom).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medprobe.errors import InvalidInputError
from medprobe.schemas.vocab import Verify

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's default Image.MAX_IMAGE_PIXELS, stated here so it cannot drift
STUDY_MAX_SIDE = 1024  # the reference study's preprocessing: longest side at most 1,024 px

REASONS = (
    "missing",  # the file does not exist
    "unreadable",  # it exists but cannot be read (permissions, I/O error)
    "empty",  # zero bytes
    "not_an_image",  # no decoder recognises the bytes
    "truncated",  # the file ends before the image data does
    "corrupt",  # the image data is malformed in some other way
    "decompression_bomb",  # the header claims more pixels than allowed
    "unsupported",  # a recognised image this build cannot decode (e.g. DICOM without pydicom)
    "hash_mismatch",  # the bytes differ from the sha256 the source manifest declares
    "bad_row",  # a manifest row that names no usable file or label
    "conflict",  # a row naming an image already seen in the same source with other labels or another split
)



# What PIL's pure-Python header parsers and C decoders raise on malformed input (hostile bytes included)
DECODER_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
)

_DICOM_MAGIC_OFFSET = 128
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_EOI = b"\xff\xd9"


class ImageReadError(InvalidInputError):
    """An image that cannot be read; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, source: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        self.reason = reason
        self.source = source
        self.detail = detail
        super().__init__(f"{source}: {reason}: {detail}")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ingest records about an image without keeping its pixels."""

    width: int
    height: int
    mode: str  # PIL mode of the stored pixels (L, I;16, RGB, P, ...) or the DICOM equivalent
    bit_depth: int  # bits per sample as stored (DICOM: BitsStored)
    format: str  # PNG, JPEG, TIFF, DICOM, ...
    frames: int = 1  # pages / frames in the file; only the first is used


_MODE_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}

FORMAT_EXTENSIONS = {
    "PNG": "png",
    "JPEG": "jpg",
    "TIFF": "tif",
    "DICOM": "dcm",
    "BMP": "bmp",
    "GIF": "gif",
    "WEBP": "webp",
    "JPEG2000": "jp2",
    "PPM": "ppm",
}


def set_pixel_limit(max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Set PIL's process-wide decompression-bomb limit to ``max_pixels``, explicitly.

    ``inspect_image`` / ``decode_image`` refuse images above their ``max_pixels`` themselves; PIL also refuses
    (at open) anything above twice its global ``Image.MAX_IMAGE_PIXELS``. Callers that allow larger images
    (``--max-pixels``) call this once before decoding so PIL's own check never fires first.
    """
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    Image.MAX_IMAGE_PIXELS = max_pixels


def bit_depth_of_mode(mode: str) -> int:
    """Bits per sample of a PIL mode (8 for L, RGB, P, CMYK, ...)."""
    return _MODE_BITS.get(mode, 8)


def file_extension(fmt: str) -> str:
    """The file extension used when image bytes of format ``fmt`` are copied into the store."""
    return FORMAT_EXTENSIONS.get(fmt.upper(), fmt.lower() or "bin")


BLOB_DIR = "blobs/images"


def blob_path(image_hash: str, fmt: str) -> str:
    """Where copied image bytes live inside the store: ``blobs/images/<hh>/<hash>.<ext>``."""
    return f"{BLOB_DIR}/{image_hash[:2]}/{image_hash}.{file_extension(fmt)}"


# --------------------------------------------------------------------------- reading bytes
def read_file_bytes(uri: str) -> bytes:
    """The bytes of a local path or fsspec URL; missing/unreadable/empty files raise ``ImageReadError``."""
    try:
        if "://" in uri:
            import fsspec

            with fsspec.open(uri, "rb") as f:
                data = f.read()
        else:
            with open(uri, "rb") as f:
                data = f.read()
    except FileNotFoundError as e:
        raise ImageReadError("missing", uri, f"no such file ({e.strerror or e})") from e
    except IsADirectoryError as e:
        raise ImageReadError("unreadable", uri, "is a directory, not a file") from e
    except OSError as e:
        raise ImageReadError("unreadable", uri, f"{type(e).__name__}: {e}") from e
    except (ValueError, ImportError) as e:  # an unknown URL scheme, or one whose filesystem is not installed
        raise ImageReadError("unreadable", uri, f"cannot open this URL: {type(e).__name__}: {e}") from e
    if not data:
        raise ImageReadError("empty", uri, "the file is zero bytes long")
    return data


def is_dicom(data: bytes, source: str = "") -> bool:
    """True when the bytes carry the DICOM preamble magic (or the name ends in .dcm)."""
    return data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM" or source.lower().endswith(".dcm")


# --------------------------------------------------------------------------- PIL opening
def _classify_decode_error(e: Exception) -> str:
    text = str(e).lower()
    if isinstance(e, Image.DecompressionBombError) or "decompressed data too large" in text:
        return "decompression_bomb"
    if "truncat" in text or isinstance(e, EOFError | struct.error) or "broken data stream" in text:
        return "truncated"
    return "corrupt"


def _open_pil(data: bytes, source: str, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageReadError("empty", source, "zero bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise ImageReadError("not_an_image", source, f"no image decoder recognises the bytes ({e})") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError("decompression_bomb", source, str(e)) from e
    except DECODER_ERRORS as e:
        raise ImageReadError(_classify_decode_error(e), source, f"{type(e).__name__}: {e}") from e
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageReadError("corrupt", source, f"image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageReadError(
            "decompression_bomb",
            source,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
            "(raise max_pixels / --max-pixels if the image is genuine)",
        )
    return img


def open_image_header(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open the image lazily (its header only: format, mode, size within ``max_pixels``, EXIF); nothing is decoded.
    Raises :class:`ImageReadError`."""
    return _open_pil(data, source, max_pixels)


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG stream ends with its end-of-image marker (a truncated file does not)."""
    return data.rstrip(b"\x00").endswith(_JPEG_EOI)


def _load(img: Image.Image, source: str) -> None:
    try:
        img.load()
    except DECODER_ERRORS as e:
        raise ImageReadError(_classify_decode_error(e), source, f"{type(e).__name__}: {e}") from e


def _verify_structure(img: Image.Image, data: bytes, source: str) -> None:
    """Catch truncation cheaply: PNG chunk CRCs up to IEND, JPEG end-of-image marker; others decode."""
    fmt = img.format
    if fmt == "PNG" and data.startswith(_PNG_MAGIC):
        try:
            img.verify()  # chunk CRCs up to IEND; valid because nothing was decoded since open()
        except DECODER_ERRORS as e:
            raise ImageReadError(_classify_decode_error(e), source, f"{type(e).__name__}: {e}") from e
        if data.rstrip(b"\x00")[-8:-4] != b"IEND":
            # verify() stops at IEND; a file cut exactly before it would otherwise pass
            raise ImageReadError("truncated", source, "PNG has no IEND chunk at its end")
        return
    if fmt == "JPEG" and data.rstrip(b"\x00").endswith(_JPEG_EOI):
        return  # scan data escapes 0xFF, so a trailing EOI marker means the stream is complete
    _load(img, source)  # JPEG without EOI (truncated or trailing bytes), TIFF, BMP, ...: decode to be sure


def inspect_image(
    data: bytes,
    *,
    source: str,
    verify: Verify | str = Verify.structure,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageInfo:
    """Size, mode, bit depth and format of image bytes, checked to the level ``verify`` asks.

    ``header`` reads the header only; ``structure`` (the default) also proves the file is complete
    (PNG chunk CRCs, JPEG end marker, a full decode for other formats); ``full`` decodes every pixel.
    Raises :class:`ImageReadError` with the failure category.
    """
    if is_dicom(data, source):
        return _inspect_dicom(data, source, verify=verify, max_pixels=max_pixels)
    img = _open_pil(data, source, max_pixels)
    info = ImageInfo(
        width=img.size[0],
        height=img.size[1],
        mode=img.mode,
        bit_depth=bit_depth_of_mode(img.mode),
        format=img.format or "UNKNOWN",
        frames=int(getattr(img, "n_frames", 1) or 1),
    )
    if verify == "structure":
        _verify_structure(img, data, source)
    elif verify == "full":
        _load(img, source)
    return info


# --------------------------------------------------------------------------- decoding
def _high_bit_to_8bit(arr: np.ndarray, *, relative_to_max: bool, full_scale: float) -> np.ndarray:
    arr = arr.astype(np.float64, copy=False)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    arr = np.clip(arr, 0.0, None)
    top = float(arr.max()) if relative_to_max else full_scale
    if top <= 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)


def _to_ready_mode(img: Image.Image, *, relative_to_max: bool) -> Image.Image:
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "LA":
        return img.getchannel("L")  # alpha discarded: the stored gray values are the image
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            full_scale = 1.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else float(np.nanmax(arr))
        else:
            full_scale = 65535.0 if mode.startswith("I;16") or int(arr.max(initial=0)) <= 65535 else 2**31 - 1
        return Image.fromarray(_high_bit_to_8bit(arr, relative_to_max=relative_to_max, full_scale=full_scale))
    if mode in ("P", "PA"):
        return img.convert("RGBA").convert("RGB")
    # RGBA, RGBX, CMYK, YCbCr, LAB, HSV, La, RGBa: to RGB (alpha discarded)
    return img.convert("RGB")


def _study_resize(img: Image.Image, max_side: int = STUDY_MAX_SIDE) -> Image.Image:
    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def decode_image(
    data: bytes,
    *,
    source: str,
    study_preprocessing: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode image bytes to a ready 8-bit ``L`` or ``RGB`` PIL image (EXIF orientation applied).

    High-bit-depth images are scaled by their format's full range (16-bit: /257); with
    ``study_preprocessing`` they are scaled relative to the image's own maximum instead, and the image is
    downsampled so its longest side is at most 1,024 px (the reference study's preprocessing).
    DICOM is rescaled (slope/intercept), windowed as the header says and MONOCHROME1 inverted.
    Raises :class:`ImageReadError`.
    """
    if is_dicom(data, source):
        img = _decode_dicom(data, source, max_pixels=max_pixels, relative_to_max=study_preprocessing)
    else:
        img = _open_pil(data, source, max_pixels)
        if img.format == "JPEG" and study_preprocessing and max(img.size) > 2 * STUDY_MAX_SIDE:
            img.draft(img.mode, (STUDY_MAX_SIDE, STUDY_MAX_SIDE))  # DCT-domain downscale, still >= target
        _load(img, source)
        try:
            img = ImageOps.exif_transpose(img)
        except (OSError, ValueError, SyntaxError, struct.error) as e:
            raise ImageReadError("corrupt", source, f"bad EXIF orientation data: {e}") from e
        img = _to_ready_mode(img, relative_to_max=study_preprocessing)
    if study_preprocessing:
        img = _study_resize(img)
    return img


def load_image(uri: str, *, study_preprocessing: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read and decode the image at a local path or fsspec URL (see :func:`decode_image`)."""
    return decode_image(
        read_file_bytes(uri), source=uri, study_preprocessing=study_preprocessing, max_pixels=max_pixels
    )


# --------------------------------------------------------------------------- DICOM
def _dicom_dataset(data: bytes, source: str, *, stop_before_pixels: bool) -> Any:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as e:
        raise ImageReadError("unsupported", source, "DICOM needs pydicom: pip install 'medprobe[dicom]'") from e
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as e:
        raise ImageReadError("not_an_image", source, f"not a DICOM file: {e}") from e
    except (OSError, ValueError, EOFError, struct.error, KeyError) as e:
        raise ImageReadError(_classify_decode_error(e), source, f"{type(e).__name__}: {e}") from e


def _dicom_size(ds: Any, source: str, max_pixels: int) -> tuple[int, int]:
    rows, cols = getattr(ds, "Rows", None), getattr(ds, "Columns", None)
    if rows is None or cols is None:
        raise ImageReadError("not_an_image", source, "DICOM file has no image (no Rows/Columns)")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if int(rows) * int(cols) * frames > max_pixels:
        raise ImageReadError(
            "decompression_bomb",
            source,
            f"{cols}x{rows}x{frames} frames exceeds the limit of {max_pixels:,} pixels",
        )
    return int(cols), int(rows)


def _dicom_pixels(ds: Any, source: str) -> np.ndarray:
    try:
        return ds.pixel_array
    except (AttributeError, KeyError) as e:
        raise ImageReadError("not_an_image", source, f"DICOM file has no pixel data ({e})") from e
    except (ValueError, RuntimeError, OSError, EOFError, struct.error) as e:
        raise ImageReadError(_classify_decode_error(e), source, f"{type(e).__name__}: {e}") from e
    except NotImplementedError as e:
        raise ImageReadError("unsupported", source, f"cannot decode this DICOM transfer syntax: {e}") from e


def _inspect_dicom(data: bytes, source: str, *, verify: Verify | str, max_pixels: int) -> ImageInfo:
    ds = _dicom_dataset(data, source, stop_before_pixels=verify == "header")
    width, height = _dicom_size(ds, source, max_pixels)
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    bits = int(getattr(ds, "BitsStored", getattr(ds, "BitsAllocated", 8)) or 8)
    mode = "RGB" if spp == 3 else ("L" if bits <= 8 else "I;16")
    if verify != "header":
        _dicom_pixels(ds, source)
    return ImageInfo(width=width, height=height, mode=mode, bit_depth=bits, format="DICOM")


def _decode_dicom(data: bytes, source: str, *, max_pixels: int, relative_to_max: bool) -> Image.Image:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space

    ds = _dicom_dataset(data, source, stop_before_pixels=False)
    _dicom_size(ds, source, max_pixels)
    arr = _dicom_pixels(ds, source)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]  # multi-frame: the first frame
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) == 3:
        if photometric.startswith("YBR"):
            arr = convert_color_space(arr, photometric, "RGB")
        if arr.dtype != np.uint8:
            arr = _high_bit_to_8bit(arr, relative_to_max=True, full_scale=1.0)
        return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)  # RescaleSlope / RescaleIntercept
    window = _first_window(ds)
    if window is not None:
        out = _apply_window(values, *window, function=str(getattr(ds, "VOILUTFunction", "LINEAR")).upper())
    else:
        if "VOILUTSequence" in ds:
            values = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
        lo = 0.0 if relative_to_max else float(values.min())
        hi = float(values.max())
        span = hi - lo
        out = np.zeros(values.shape) if span <= 0 else np.clip((values - lo) / span, 0.0, 1.0)
    out8 = np.rint(out * 255.0).astype(np.uint8)
    if photometric == "MONOCHROME1":
        out8 = 255 - out8  # MONOCHROME1: low values are white
    return Image.fromarray(out8, mode="L")


def _first_window(ds: Any) -> tuple[float, float] | None:
    """(center, width) of the header's first VOI window, or None when it declares none."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = ds.WindowCenter, ds.WindowWidth
    center = float(center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center)
    width = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
    return (center, width) if width > 0 else None


def _apply_window(values: np.ndarray, center: float, width: float, *, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing onto [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - (center - width / 2.0)) / width, 0.0, 1.0)
    if width <= 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "REASONS",
    "STUDY_MAX_SIDE",
    "ImageInfo",
    "ImageReadError",
    "decode_image",
    "file_extension",
    "inspect_image",
    "is_dicom",
    "load_image",
    "read_file_bytes",
    "set_pixel_limit",
]
