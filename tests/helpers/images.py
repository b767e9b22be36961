"""Builders of small synthetic images and files shared by the ingest tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(arr: np.ndarray | None = None, *, mode: str | None = None, seed: int = 0) -> bytes:
    """PNG bytes of ``arr`` (default: a random 16x12 grayscale image)."""
    if arr is None:
        arr = np.random.default_rng(seed).integers(0, 255, size=(12, 16), dtype=np.uint8)
    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_bytes(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def write_png(path: Path, *, seed: int = 0, size: tuple[int, int] = (16, 12)) -> bytes:
    """Write a distinct random grayscale PNG to ``path``; returns its bytes."""
    rng = np.random.default_rng(seed)
    data = png_bytes(rng.integers(0, 255, size=(size[1], size[0]), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def write_jpeg(path: Path, *, seed: int = 0, size: tuple[int, int] = (16, 12)) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8))
    data = image_bytes(img, "JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def png_with_huge_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` pixels (a decompression bomb's header)."""

    def chunk(cid: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + cid + payload + struct.pack(">I", zlib.crc32(cid + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
