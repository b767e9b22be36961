"""Exclusive creation and takeover of small files (locks, job claims): the one place that decides whether a store
can make them exclusive.

- Local disks: a complete temporary file hard-linked into place (``O_EXCL`` semantics). A takeover holds an
  ``flock`` on ``<lock>.takeover`` (the kernel releases it if the taker dies), re-reads the lock, and only if it is
  still the stale one replaces it in one ``rename``: takers are serialised, and no moment exists in which the lock
  file is absent, so a creator can never slip in beside the new holder.
- ``memory://``: one process owns it; a process-wide lock makes check-then-put atomic.
- S3 (s3fs): conditional writes. Creation is a PUT with ``If-None-Match: *``; a takeover is a PUT with ``If-Match``
  of the stale lock's ETag, so of two takers one wins. Whether the endpoint honours them (AWS S3 does; some
  S3-compatible servers ignore the headers) is probed once per store and process: a probe object is created twice
  and the second create must fail.
- Any other object store, or an S3 endpoint that ignores conditional writes: :class:`StoreWriteError`, one line
  saying why. ``required=False`` (the store marker, which any writer may create) falls back to check-then-put.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import threading

from medprobe.errors import StoreWriteError
from medprobe.featurestore.fsio import Location, durable_temp, fsync_dir

_MEMORY = threading.Lock()  # memory:// lives in this process: this lock makes its check-then-put atomic
_PROBED: dict[tuple[int, str], str | None] = {}  # (id of the filesystem, store root) -> why not exclusive, or None
_PROBE_LOCK = threading.Lock()


def _protocols(loc: Location) -> tuple[str, ...]:
    protocol = loc.fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _is_memory(loc: Location) -> bool:
    return "memory" in _protocols(loc)


def _is_s3(loc: Location) -> bool:
    return any(p in ("s3", "s3a") for p in _protocols(loc))


def not_exclusive(loc: Location) -> str | None:
    """Why this store cannot create or take over a file exclusively; None when it can."""
    if loc.is_local or _is_memory(loc):
        return None
    if not _is_s3(loc):
        return (f"store {loc.url}: {_protocols(loc)[0]}:// offers medprobe no conditional writes, so a lock there "
                "cannot be exclusive; use a local folder or S3 for stores that several processes write")  # fmt: skip
    key = (id(loc.fs), loc.root)
    with _PROBE_LOCK:
        if key not in _PROBED:
            _PROBED[key] = _probe_s3(loc)
        return _PROBED[key]


def _probe_s3(loc: Location) -> str | None:
    probe = loc.path("locks", f".conditional-write-probe-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        loc.fs.pipe_file(probe, b"1", mode="create")
        try:
            loc.fs.pipe_file(probe, b"2", mode="create")
        except FileExistsError:
            return None
        return (f"store {loc.url}: this S3 endpoint ignores conditional writes (If-None-Match), so a lock there "
                "cannot be exclusive; use AWS S3 or a server that supports them, or a local folder")  # fmt: skip
    finally:
        with contextlib.suppress(FileNotFoundError):
            loc.fs.rm(probe)


def create_exclusive(loc: Location, path: str, data: bytes, *, required: bool = True) -> bool:
    """Create ``path`` with ``data`` only if it does not exist; True when this call created it.

    Raises :class:`StoreWriteError` when the store cannot make it exclusive, unless ``required`` is False (then it
    is check-then-put: right for files any writer may create with the same meaning, such as the store marker).
    """
    parent = posixpath.dirname(path)
    if loc.is_local:
        tmp = durable_temp(path, data)
        try:
            os.link(tmp, path)  # fails if path exists; the content is complete when it appears
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        fsync_dir(parent)
        return True
    if _is_memory(loc):
        with _MEMORY:
            if loc.fs.exists(path):
                return False
            loc.fs.pipe_file(path, data)
            return True
    why = not_exclusive(loc)
    if why is None:
        try:
            loc.fs.pipe_file(path, data, mode="create")  # S3: If-None-Match: *
        except FileExistsError:
            return False
        return True
    if required:
        raise StoreWriteError(why)
    if loc.fs.exists(path):
        return False
    loc.fs.makedirs(parent, exist_ok=True)
    loc.fs.pipe_file(path, data)
    return True


def take_over(loc: Location, path: str, seen: bytes, data: bytes) -> bool:
    """Replace the lock file ``path``, whose content was ``seen`` (its holder is gone), by ``data``; True when this
    call holds it now. Of several takers exactly one wins, on every store this module accepts."""
    if _is_memory(loc):
        with _MEMORY:
            try:
                current = bytes(loc.fs.cat_file(path))
            except FileNotFoundError:
                current = None
            if current is not None and current != seen:
                return False
            loc.fs.pipe_file(path, data)
            return True
    if not loc.is_local:
        return _take_over_s3(loc, path, seen, data)
    import fcntl

    with open(f"{path}.takeover", "a") as mutex:
        fcntl.flock(mutex.fileno(), fcntl.LOCK_EX)  # one taker at a time; released on close or death
        try:
            with open(path, "rb") as f:
                on_disk: bytes | None = f.read()
        except FileNotFoundError:
            on_disk = None
        if on_disk != seen:
            return False  # released, or taken over by another taker first
        tmp = durable_temp(path, data)
        os.replace(tmp, path)  # the stale lock becomes ours in one step
        fsync_dir(posixpath.dirname(path))
        return True


def _take_over_s3(loc: Location, path: str, seen: bytes, data: bytes) -> bool:
    why = not_exclusive(loc)
    if why is not None:
        raise StoreWriteError(why)
    try:
        etag = loc.fs.info(path).get("ETag")
        current = bytes(loc.fs.cat_file(path))
    except FileNotFoundError:
        return create_exclusive(loc, path, data)  # released meanwhile
    if current != seen or not etag:
        return False  # someone else holds it now
    try:
        loc.fs.pipe_file(path, data, IfMatch=etag)  # only if it is still the stale lock we read
    except OSError:  # PreconditionFailed: another taker replaced it first
        return False
    return bytes(loc.fs.cat_file(path)) == data
