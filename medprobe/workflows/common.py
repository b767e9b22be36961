"""What every workflow function shares: opening the store it is given, reading list options, store warnings."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from enum import Enum
from typing import TypeVar

from medprobe.errors import InvalidInputError, StoreWarning
from medprobe.featurestore import FeatureStore, default_store_url
from medprobe.trainer.defaults import N_BOOT

StoreArg = str | FeatureStore | None
ListArg = str | Sequence[str | int | float] | None
E = TypeVar("E", bound=Enum)
__all__ = ["N_BOOT", "ListArg", "StoreArg", "StoreWarning", "choice", "float_list", "int_list", "open_store",
           "optional_choice", "pairs", "split_list", "split_names"]  # fmt: skip


def open_store(store: StoreArg = None, *, create: bool = False) -> FeatureStore:
    """The store named by ``store`` (a URL, an open ``FeatureStore``, or None: ``$MEDPROBE_STORE`` or
    ``./medprobe-store``). Only workflows that add data pass ``create=True``, so a typo never leaves an empty store."""
    if isinstance(store, FeatureStore):
        store.refresh()
        return store
    opened = FeatureStore.open(store or default_store_url(), create=create)
    bad = opened.unreadable_fragments
    if bad:
        warnings.warn(
            f"{len(bad)} unreadable fragment(s) in {opened.url} are left out of every table (first: "
            f"{next(iter(bad))}); `medprobe store verify` names them, `medprobe store quarantine` moves them aside",
            StoreWarning,
            stacklevel=2,
        )
    return opened


def check_out_folder(out: str) -> None:
    """InvalidInputError unless ``out`` can be the folder a report writes (absent, or a folder)."""
    import os

    if os.path.exists(out) and not os.path.isdir(out):
        raise InvalidInputError(f"--out {out} is a file; a report writes a folder (PNGs and summary.md): name a folder")


def split_list(values: ListArg) -> list[str]:
    """A list option's items: each value split on commas, blanks dropped (``["a,b", "c"]`` -> ``[a, b, c]``)."""
    if values is None:
        return []
    if isinstance(values, str | int | float):
        values = [values]
    return [item.strip() for v in values for item in str(v).split(",") if item.strip()]


def float_list(values: ListArg, option: str) -> list[float]:
    """A list option's items as floats; InvalidInputError names the option."""
    try:
        return [float(v) for v in split_list(values)]
    except ValueError as e:
        raise InvalidInputError(f"{option}: cannot read {values!r} as comma-separated numbers") from e


def int_list(values: ListArg, option: str) -> list[int]:
    """A list option's items as integers; InvalidInputError names the option."""
    try:
        return [int(v) for v in split_list(values)]
    except ValueError as e:
        raise InvalidInputError(f"{option}: cannot read {values!r} as comma-separated integers") from e


def split_names(values: ListArg, option: str = "--split") -> list[str]:
    """A list of split names (train, val, test); an unknown name fails naming the known ones."""
    from medprobe.schemas import SPLITS

    names = split_list(values)
    unknown = [n for n in names if n not in SPLITS]
    if unknown:
        raise InvalidInputError(f"{option}: unknown split(s) {unknown}; splits are {', '.join(SPLITS)}")
    return names


def pairs(values: ListArg, option: str) -> dict[str, str]:
    """``NAME=VALUE`` items of a list option as a dict."""
    out = {}
    for part in split_list(values):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInputError(f"{option} takes NAME=VALUE (e.g. {option} kl_grade=ordinal); got {part!r}")
        out[key.strip()] = value.strip()
    return out


def choice(enum: type[E], value: str | E | None, option: str) -> E:
    """``value`` as a member of ``enum`` (a string is matched case-insensitively); InvalidInputError lists them."""
    if isinstance(value, enum):
        return value
    for member in enum:
        if str(value).lower() == str(member.value).lower():
            return member
    raise InvalidInputError(f"{option} {value!r}: choose one of {', '.join(str(m.value) for m in enum)}")


def optional_choice(enum: type[E], value: str | E | None, option: str) -> E | None:
    """:func:`choice`, with None passed through."""
    return None if value is None else choice(enum, value, option)
