"""Options and helpers shared by every CLI command."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

DEFAULT_STORE = "./medprobe-store"

console = Console()
err_console = Console(stderr=True)


def default_store_url() -> str:
    """The store URL used when ``--store`` is not given: ``$MEDPROBE_STORE`` or ``./medprobe-store``."""
    return os.environ.get("MEDPROBE_STORE") or DEFAULT_STORE


StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        "-s",
        help="Store URL: a folder, memory://..., s3://... [default: $MEDPROBE_STORE or ./medprobe-store]",
        show_default=False,
    ),
]


def open_store(url: str | None, *, create: bool = True):
    """Open the store named by ``--store`` (or the default) for a command."""
    from medprobe.featurestore import FeatureStore

    return FeatureStore.open(url or default_store_url(), create=create)
