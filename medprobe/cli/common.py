"""Consoles and store opening shared by every CLI command (the options themselves are in ``options.py``)."""

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
    """Open the store named by ``--store`` (or the default) for a command; only commands that add data (ingest,
    demo) pass ``create=True``: a typo in ``--store`` never leaves an empty store behind."""
    from medprobe.featurestore import FeatureStore

    store = FeatureStore.open(url or default_store_url(), create=create)
    bad = store.unreadable_fragments
    if bad:
        n = len(bad)
        err_console.print(
            f"[yellow]warning:[/] {n} unreadable fragment(s) in {store.url} are left out of every table "
            f"(first: {next(iter(bad))}); `medprobe store verify` names them, "
            "`medprobe store quarantine` moves them aside",
            highlight=False,
            soft_wrap=True,
        )
    return store
