"""A folder of small files inside the store for components that keep state there (the extraction job queue).

Paths are relative to the area. Writes are atomic (readers see nothing or all of a file); ``create_exclusive``
creates a file only if it does not exist yet (atomic on local folders, check-then-put on object stores).
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass

from medprobe.featurestore.exclusive import create_exclusive, take_over
from medprobe.featurestore.fsio import Location, list_files, resolve, write_atomic

STORE_URI = "store:"  # image URIs of bytes copied into the store: "store:" + path relative to the store root


@dataclass(frozen=True)
class FileArea:
    """The files under ``<store>/<name>/``."""

    loc: Location
    name: str

    def _path(self, relpath: str) -> str:
        return self.loc.path(self.name, relpath) if relpath else self.loc.path(self.name)

    def read(self, relpath: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            return bytes(self.loc.fs.cat_file(self._path(relpath)))
        except FileNotFoundError:
            return None

    def write_atomic(self, relpath: str, data: bytes) -> None:
        """Write (or replace) a file so that readers see either the old or the whole new content."""
        write_atomic(self.loc, self._path(relpath), data)

    def create_exclusive(self, relpath: str, data: bytes) -> bool:
        """Create a file unless it exists; True when this call created it."""
        return create_exclusive(self.loc, self._path(relpath), data)

    def take_over(self, relpath: str, seen: bytes, data: bytes) -> bool:
        """Replace a stale lock file whose content was ``seen`` by ``data`` (see :func:`exclusive.take_over`)."""
        return take_over(self.loc, self._path(relpath), seen, data)

    def remove(self, relpath: str) -> None:
        """Remove a file if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.loc.fs.rm(self._path(relpath))

    def entries(self, relpath: str = "") -> list[tuple[str, str]]:
        """``(name, type)`` of what lies directly under ``relpath`` (type: file or directory); [] if absent."""
        return [
            (posixpath.basename(str(e["name"]).rstrip("/")), str(e.get("type", "file")))
            for e in list_files(self.loc, self._path(relpath))
        ]


class StoreBlobs:
    """Reads ``store:<relpath>`` URIs of one store by URL, without opening its catalog (cheap in worker processes)."""

    def __init__(self, store_url: str, loc: Location | None = None) -> None:
        self.store_url = store_url
        self._loc = loc  # resolved on first use when not given (a DataLoader worker resolves its own)

    def read(self, uri: str) -> bytes:
        """The bytes of a ``store:`` URI; FileNotFoundError when absent."""
        if not uri.startswith(STORE_URI):
            raise ValueError(f"{uri!r} is not a store: URI")
        if self._loc is None:
            self._loc = resolve(self.store_url)
        return bytes(self._loc.fs.cat_file(self._loc.path(uri[len(STORE_URI) :])))
