"""Run records: who ran what, when, with which versions; written at start and at the end."""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import TYPE_CHECKING, Any

from medprobe import __version__
from medprobe.featurestore.ids import canonical_json, new_id
from medprobe.featurestore.processes import process_gone
from medprobe.schemas import RunRow, utcnow
from medprobe.schemas.tables import RunStatus

if TYPE_CHECKING:
    from medprobe.featurestore.store import FeatureStore

_PACKAGES = (
    "numpy",
    "zarr",
    "duckdb",
    "pyarrow",
    "fsspec",
    "torch",
    "transformers",
    "accelerate",
    "scikit-learn",
    "cuml",
    "tokenizers",
    "pillow",
)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that change numbers (without importing them)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Run:
    """A run in progress. ``summary`` is saved with the final row."""

    def __init__(
        self, store: FeatureStore, kind: str, params: dict[str, Any], command: str | None = None,
        run_id: str | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.run_id = run_id or new_id(kind)  # a given id: a resumed run (its latest runs row wins)
        self.kind = kind
        self.params = params
        self.command = command if command is not None else " ".join(["medprobe", *sys.argv[1:]])
        self.summary: dict[str, Any] = {}
        self.started_at = utcnow()
        self._versions = json.dumps(package_versions(), sort_keys=True)
        self._first_txn = len(store.committed_transactions)  # the transactions committed from here on are this run's

    def _row(self, status: RunStatus) -> RunRow:
        return RunRow(
            run_id=self.run_id,
            kind=self.kind,
            command=self.command,
            status=status,
            user=_user(),
            host=socket.gethostname(),
            started_at=self.started_at,
            medprobe_version=__version__,
            versions=self._versions,
            params=canonical_json(self.params),
            summary=canonical_json(self.summary),
            pid=os.getpid(),
            transactions=self.store.committed_transactions[self._first_txn :] or None,
        )

    def __enter__(self) -> Run:
        self.store.append("runs", [self._row("running")])
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        status: RunStatus
        if exc_type is None:
            status = "finished"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = "failed"
            self.summary.setdefault("error", f"{exc_type.__name__}: {exc}")
        self.store.append("runs", [self._row(status)])


def start_run(
    store: FeatureStore, kind: str, params: dict[str, Any] | None = None, command: str | None = None,
    run_id: str | None = None,
) -> Run:  # fmt: skip
    """``with start_run(store, "extract", {...}) as run:`` records the run at start and at the end.

    ``run_id`` resumes a run under its own id (its newest ``runs`` row is the one readers see)."""
    return Run(store, kind, params or {}, command, run_id)


def effective_status(row: dict[str, Any]) -> str:
    """A run's status as a reader should see it: ``running`` becomes ``abandoned`` when its process is gone (on this
    host: the pid is not alive). A run on another host stays ``running``; only its host can tell."""
    status = str(row.get("status"))
    pid = row.get("pid")
    if status == "running" and process_gone(row.get("host"), pid):
        return "abandoned"
    return status
