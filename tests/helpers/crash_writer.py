"""A writer process for the crash and concurrency tests: commits segments whose numbers derive from the image hashes.

Run as ``python crash_writer.py STORE PREFIX N_SEGMENTS ROWS [FIRST]``: commits segments of ROWS images
``image_hash(f"{PREFIX}{i}")`` for consecutive i starting at FIRST (default 0), all layers of the test feature set,
and prints each segment id once its commit returned. ``N_SEGMENTS`` 0 means forever.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: ``tests.helpers`` imports

from medprobe.featurestore import FeatureStore
from tests.helpers.features import activations, feature_set_row, image_hash

FEATURE_SET = feature_set_row("fs-crash", n_layers=3, hidden=[8, 16, 24])


def commit_loop(
    url: str, prefix: str, n_segments: int, rows: int, first: int = 0, step: int | None = None, log: str | None = None
) -> None:
    """Commit segments of ``rows`` images (i, i+1, ...), ``step`` images apart; print (or log) each segment id."""
    out = open(log, "a") if log else sys.stdout  # noqa: SIM115 - lives as long as the process
    warm = FeatureStore.open(f"memory://warm-up-{os.getpid()}")  # first-call costs paid before "ready"
    warm.register_feature_set(FEATURE_SET)
    hashes = [image_hash(f"warm-up-{j}") for j in range(2)]
    warm.commit_segment(FEATURE_SET.feature_set_id, hashes, {0: activations(hashes, 0, FEATURE_SET.hidden_sizes[0])})
    store = FeatureStore.open(url)
    store.register_feature_set(FEATURE_SET)
    print("ready", file=out, flush=True)
    i, done = first, 0
    while n_segments == 0 or done < n_segments:
        hashes = [image_hash(f"{prefix}{j}") for j in range(i, i + rows)]
        arrays = {layer: activations(hashes, layer, size) for layer, size in enumerate(FEATURE_SET.hidden_sizes)}
        segment_id = store.commit_segment(FEATURE_SET.feature_set_id, hashes, arrays)
        print(segment_id, file=out, flush=True)
        i += step or rows
        done += 1


if __name__ == "__main__":
    args = sys.argv[1:]
    commit_loop(args[0], args[1], int(args[2]), int(args[3]), *(int(a) for a in args[4:6]))
