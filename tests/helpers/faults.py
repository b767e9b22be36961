"""Fault hooks the tests pass into the engines (``ShardRunner(fault=...)``, ``Ray(fault=...)``)."""

from __future__ import annotations

import os


class DieOnceAfterCommit:
    """Kill the process after its first commit, once per marker file (a worker lost mid-shard)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, n: int) -> None:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(17)  # a killed worker, after its first commit
