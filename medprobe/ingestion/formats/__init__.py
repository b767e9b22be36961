"""Source layouts: one module per layout family, each exposing ``parse(source, options) -> ParsedSource``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medprobe.errors import InvalidInputError
from medprobe.ingestion.formats import (
    arrays,
    csv_manifest,
    dermatology,
    fundus,
    imagefolder,
    knee,
    padchest,
)
from medprobe.ingestion.records import FormatOptions, ParsedSource

Parser = Callable[[Path, FormatOptions], ParsedSource]




FORMATS: dict[str, Parser] = {
    "csv": csv_manifest.parse,
    "imagefolder": imagefolder.parse,
    "medmnist": arrays.parse_medmnist,
    "nct-crc": imagefolder.parse_nct_crc,
    "pannuke": arrays.parse_pannuke,
    "isic2018": dermatology.parse_isic2018,
    "isic2020": dermatology.parse_isic2020,
    "eyepacs": fundus.parse_eyepacs,
    "aptos": fundus.parse_aptos,
    "airogs": fundus.parse_airogs,
    "odir": fundus.parse_odir,
    "padchest": padchest.parse,
    "knee": knee.parse,
}


def parse_source(fmt: str, source: str | Path, options: FormatOptions) -> ParsedSource:
    """Parse ``source`` with the parser of format ``fmt``."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidInputError(f"{path}: the source does not exist")
    return FORMATS[fmt](path, options)
