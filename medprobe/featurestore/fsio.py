"""Filesystem access through fsspec, with atomic and durable writes on local disks."""

from __future__ import annotations

import os
import posixpath
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from medprobe.errors import StoreWriteError


@dataclass
class Location:
    """A filesystem and a root path inside it."""

    fs: fsspec.AbstractFileSystem
    root: str  # path inside ``fs``, no protocol, no trailing slash
    url: str  # the URL the store was opened with

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Join ``parts`` under the root."""
        return posixpath.join(self.root, *parts)

    def full_url(self, path: str) -> str:
        """A URL for ``path`` that other tools (DuckDB, zarr) can open."""
        return path if self.is_local else self.fs.unstrip_protocol(path)


def resolve(url: str) -> Location:
    """Parse a store URL (folder, ``memory://x``, ``s3://bucket/prefix``) into a :class:`Location`.

    Object stores are opened without fsspec's listing cache: a store handle must see what other processes wrote
    (``refresh()``, a worker polling for jobs), and every listing medprobe makes is one it needs fresh.
    """
    protocol = fsspec.core.split_protocol(url)[0]
    options = {"use_listings_cache": False} if protocol not in (None, "file", "local", "memory") else {}
    fs, root = fsspec.core.url_to_fs(url, **options)
    if isinstance(fs, LocalFileSystem):
        root = os.path.abspath(root)
    return Location(fs=fs, root=root.rstrip("/") or "/", url=url)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_temp(path: str, data: bytes) -> str:
    """A fsynced temporary file holding ``data`` beside local ``path`` (its folder created); returns its path."""
    parent = posixpath.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_atomic(loc: Location, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it.

    Local disks: temporary file in the same folder, fsync, rename, fsync the folder.
    Object stores and memory: a single put, which they make visible atomically.
    """
    parent = posixpath.dirname(path)
    if loc.is_local:
        tmp = durable_temp(path, data)
        os.replace(tmp, path)
        fsync_dir(parent)
    else:
        loc.fs.makedirs(parent, exist_ok=True)
        loc.fs.pipe_file(path, data)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    """fsync every file and folder under a local ``path``, and its parent folder (makes a new segment durable).

    The fsyncs run in a few threads: the filesystem journal then commits them together, which is several times
    faster than one after the other.
    """
    paths: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(path):
        paths += [os.path.join(dirpath, name) for name in filenames]
        paths.append(dirpath)
    paths.append(os.path.dirname(os.path.abspath(path)))
    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        list(pool.map(_fsync_path, paths))


def list_files(loc: Location, path: str) -> list[dict]:
    """Entries (dicts with name, size, type, mtime when known) directly under ``path``; [] if absent."""
    try:
        return loc.fs.ls(path, detail=True)
    except FileNotFoundError:
        return []


@contextmanager
def naming_the_store(url: str, doing: str) -> Iterator[None]:
    """Turn an OS-level write failure (a full disk, no permission) into one line that names the store."""
    try:
        yield
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        reason = e.strerror or type(e).__name__
        raise StoreWriteError(
            f"store {url}: {doing} failed: {reason}; free space or fix permissions there (nothing was committed)"
        ) from e


def is_credentials_error(e: BaseException) -> bool:
    """An object store refused or lacked credentials (botocore's NoCredentialsError, an access-denied reply...)."""
    name = type(e).__name__
    text = str(e)
    return name in ("NoCredentialsError", "PartialCredentialsError", "InvalidAccessKeyId") or (
        isinstance(e, PermissionError)
        or any(k in text for k in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"))
    )
