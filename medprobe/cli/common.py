"""Consoles and the store option shared by every CLI command (the options themselves are in ``options.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from medprobe.featurestore import default_store_url

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore

console = Console()
err_console = Console(stderr=True)

__all__ = ["console", "default_store_url", "err_console", "open_store"]


def open_store(url: str | None, *, create: bool = False) -> FeatureStore:
    """Open the store named by ``--store`` (or the default) for a command; only commands that add data pass
    ``create=True``: a typo in ``--store`` never leaves an empty store behind."""
    from medprobe.workflows.common import open_store as open_named

    return open_named(url, create=create)
