"""Byte counts as people write and read them: ``--max-bytes 2G`` in, ``1.5 GB`` out (powers of 1,024)."""

from __future__ import annotations

import re

from medprobe.errors import InvalidInputError

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3,
          "T": 1024**4, "TB": 1024**4}  # fmt: skip


def parse_bytes(text: str | int, option: str = "--max-bytes") -> int:
    """``"500M"``, ``"2G"``, ``"1.5GB"`` or a plain number of bytes; refused naming ``option`` otherwise."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _UNITS:
        raise InvalidInputError(f"{option} {text!r}: give bytes as a number with an optional unit, e.g. 500M or 2G")
    return int(float(m.group(1)) * _UNITS[unit])


def human_bytes(n: int) -> str:
    """``n`` bytes as ``"1.5 GB"``."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"
