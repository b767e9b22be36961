"""The shard runner: one process's side of every engine (a Ray actor, a SLURM array task, a queue worker).

Correctness comes from the store, not from the engine: the shard function (``medprobe.extractor.pipeline.
extract_shard``) is idempotent. It asks the store which images of its shard (a fixed slice of the dataset by image
hash) still miss rows, commits its own segments (data first, then the manifest fragment that makes them visible)
and returns a summary. Running a shard twice, or two copies at once, is harmless: the second finds the rows
committed, and a row committed twice shows once (the store's views keep the first segment). Activations never pass
through an engine's object store; only options and summaries do.

A :class:`ShardRunner` keeps what a process reuses across shards (one loaded model, one open store) as its own
state; whoever runs shards owns one (an actor, a task, a worker). Fault hooks are passed in (``fault``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from medprobe.extractor.pipeline import ExtractOptions, extract_shard, load_model

if TYPE_CHECKING:
    from medprobe.adapters.adapter import Adapter
    from medprobe.featurestore import FeatureStore

SUMMARY_KEYS = ("images_selected", "images_skipped", "images_todo", "images_forwarded", "images_committed",
                "failures", "segments", "seconds")  # fmt: skip
FaultHook = Callable[[int], None]  # called after each commit with its image count (fault-injection drills)


class ShardRunner:
    """Runs shards in this process, keeping one model loaded (a different model replaces it) and one open store per
    URL (a later shard refreshes it to see other workers' commits)."""

    def __init__(self, *, fault: FaultHook | None = None) -> None:
        self.fault = fault
        self._adapter: tuple[tuple, Adapter] | None = None
        self._stores: dict[str, FeatureStore] = {}

    def store(self, url: str) -> FeatureStore:
        """The open store at ``url``, refreshed."""
        from medprobe.featurestore import FeatureStore

        if url not in self._stores:
            self._stores[url] = FeatureStore.open(url, create=False)
        else:
            self._stores[url].refresh()
        return self._stores[url]

    def adapter(self, options: ExtractOptions) -> Adapter:
        """The loaded model for ``options``; a different model replaces it (the previous one is freed first)."""
        key = (options.model, options.resolved_device(), options.resolved_dtype(), options.trust_remote_code,
               options.allow_pickle, options.quantization, options.device_map)  # fmt: skip
        if self._adapter is None or self._adapter[0] != key:
            self._adapter = None
            self._adapter = (key, load_model(options))
        return self._adapter[1]

    def run(
        self, store: str | FeatureStore, options: ExtractOptions | dict[str, Any], shard: int, n_shards: int,
        engine: str, *, stop: threading.Event | None = None, on_start: Callable[[str, Any], None] | None = None,
        on_commit: Callable[[int], None] | None = None, before_commit: Callable[[], None] | None = None,
        run_params: dict[str, Any] | None = None, show_progress: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Extract what shard ``shard`` of ``n_shards`` still misses; returns its counts (no activations)."""
        st = self.store(store) if isinstance(store, str) else store
        opts = options if isinstance(options, ExtractOptions) else ExtractOptions.model_validate(options)

        def committed(n: int) -> None:
            if on_commit is not None:
                on_commit(n)
            if self.fault is not None:
                self.fault(n)

        summary = extract_shard(st, opts, adapter=self.adapter(opts), shard=(shard, n_shards), engine=engine,
                                stop=stop, show_progress=show_progress, on_start=on_start, on_commit=committed,
                                before_commit=before_commit, run_params=run_params)  # fmt: skip
        return {"shard": shard, **{k: summary[k] for k in SUMMARY_KEYS}}


def run_task(store_url: str, options: dict[str, Any], shard: int, n_shards: int, engine: str,
             fault: FaultHook | None = None) -> dict[str, Any]:  # fmt: skip
    """One shard in a fresh process (a SLURM array task): its own runner."""
    return ShardRunner(fault=fault).run(store_url, options, shard, n_shards, engine)
