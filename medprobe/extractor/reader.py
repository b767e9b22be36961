"""Dataset rows -> the images still to extract -> a DataLoader that reads, decodes and preprocesses in workers.

The plan asks the store which (feature set, layer, image) rows already exist and keeps only the
images that miss at least one; the list lives in Arrow arrays (no per-row Python objects, so forked
workers do not copy it page by page). Batches flow through a DataLoader with a bounded prefetch, so
host memory depends on the batch size and worker count, never on the dataset size.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

from medprobe.errors import NotFoundError
from medprobe.extractor.adapter import Preprocessor
from medprobe.featurestore.fsio import resolve
from medprobe.featurestore.ids import new_id
from medprobe.imaging import ImageReadError, decode_image, read_file_bytes

STORE_URI = "store:"


@dataclass
class Plan:
    """The images of one extraction still to do, in image-hash order."""

    todo: pa.Table  # image_hash, uri, n_have (how many wanted (feature set, layer) rows exist already)
    n_selected: int  # images of the dataset selection (after sharding)
    n_complete: int  # of those, images with every wanted row present (skipped)
    present: dict[str, set[tuple[str, int]]] = field(default_factory=dict)  # partial images: rows that exist

    @property
    def n_todo(self) -> int:
        return self.todo.num_rows


def shard_of(image_hash: str, n_shards: int) -> int:
    """The fixed shard of an image: its hash's first 32 bits modulo ``n_shards``."""
    return int(image_hash[:8], 16) % n_shards


def check_dataset(store, dataset: str) -> None:
    """Raise NotFoundError naming the known datasets unless ``dataset`` has images in the store."""
    n = store.sql("SELECT count(*) AS n FROM dataset_images WHERE dataset = ?", [dataset]).column("n")[0].as_py()
    if n:
        return
    known = store.sql("SELECT DISTINCT dataset FROM dataset_images ORDER BY 1").column("dataset").to_pylist()
    raise NotFoundError(
        f"unknown dataset {dataset!r} (no images in the store); known datasets: {', '.join(known) or 'none'}; "
        "ingest it first"
    )


def plan_images(
    store,
    dataset: str,
    feature_set_ids: Sequence[str],
    layers: Sequence[int],
    *,
    splits: Sequence[str] | None = None,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
) -> Plan:
    """Which images of ``dataset`` (optionally only ``splits``, one ``(index, count)`` shard, the first
    ``limit``) miss at least one (feature set, layer) row; partial images carry the rows they have."""
    check_dataset(store, dataset)
    want = len(feature_set_ids) * len(layers)
    split_sql = " AND list_contains(?, di.split)" if splits else ""
    params: list[Any] = [dataset, *([list(splits)] if splits else []), list(feature_set_ids), [int(x) for x in layers]]
    table = store.catalog.query(
        f"""
        WITH want AS (
            SELECT di.image_hash, i.uri FROM dataset_images di LEFT JOIN images i USING (image_hash)
            WHERE di.dataset = ?{split_sql}
        ), have AS (
            SELECT image_hash, count(*) AS n FROM (
                SELECT DISTINCT feature_set_id, layer, image_hash FROM raw_activations
                WHERE list_contains(?, feature_set_id) AND list_contains(?, layer)
            ) GROUP BY image_hash
        )
        SELECT w.image_hash, w.uri, coalesce(h.n, 0)::INTEGER AS n_have
        FROM want w LEFT JOIN have h USING (image_hash) ORDER BY w.image_hash
        """,
        params,
    )
    if shard is not None:
        index, count = shard
        mask = [shard_of(h, count) == index for h in table.column("image_hash").to_pylist()]
        table = table.filter(pa.array(mask, pa.bool_()))
    if limit is not None:
        table = table.slice(0, limit)
    n_selected = table.num_rows
    n_have = table.column("n_have").to_pylist()
    todo = table.filter(pa.array([n < want for n in n_have], pa.bool_()))
    partial = [h for h, n in zip(table.column("image_hash").to_pylist(), n_have, strict=True) if 0 < n < want]
    return Plan(
        todo=todo,
        n_selected=n_selected,
        n_complete=n_selected - todo.num_rows,
        present=_present_rows(store, partial, feature_set_ids, layers),
    )


def _present_rows(store, hashes: list[str], feature_set_ids, layers) -> dict[str, set[tuple[str, int]]]:
    if not hashes:
        return {}
    name = f"_partial_{new_id().replace('-', '_')}"
    store.catalog.register_temp(name, pa.table({"image_hash": pa.array(hashes, pa.string())}))
    try:
        rows = store.catalog.query(
            f"SELECT DISTINCT a.image_hash, a.feature_set_id, a.layer FROM raw_activations a JOIN {name} p "
            "USING (image_hash) WHERE list_contains(?, a.feature_set_id) AND list_contains(?, a.layer)",
            [list(feature_set_ids), [int(x) for x in layers]],
        )
    finally:
        store.catalog.unregister_temp(name)
    out: dict[str, set[tuple[str, int]]] = {h: set() for h in hashes}
    for h, fs, layer in zip(*(rows.column(c).to_pylist() for c in range(3)), strict=True):
        out[h].add((fs, int(layer)))
    return out


# --------------------------------------------------------------------------- worker side
@dataclass
class Failure:
    """An image that could not be read or decoded."""

    image_hash: str
    uri: str | None
    reason: str
    error: str


@dataclass
class Decoded:
    image_hash: str
    uri: str | None
    image: Any  # PIL image, or None on failure
    failure: Failure | None
    read_s: float
    decode_s: float


@dataclass
class LoadedBatch:
    """One batch as it leaves the DataLoader: model inputs for the decodable images, plus failures."""

    image_hashes: list[str]  # images in ``inputs`` order
    inputs: dict[str, torch.Tensor]
    failures: list[Failure]
    n_refs: int  # images this batch consumed from the plan (decoded + failed)
    read_s: float
    decode_s: float
    preprocess_s: float

    def pin_memory(self) -> LoadedBatch:
        """Called by the DataLoader's pin-memory thread on CUDA."""
        self.inputs = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        return self


class ImageRefs(Dataset):
    """Map-style dataset over the plan's ``(image_hash, uri)`` arrays from ``start``; returns decoded images."""

    def __init__(self, todo: pa.Table, store_url: str, *, start: int = 0, study_preprocessing: bool = False) -> None:
        self.hashes = todo.column("image_hash").combine_chunks()
        self.uris = todo.column("uri").combine_chunks()
        self.store_url = store_url
        self.start = start
        self.study_preprocessing = study_preprocessing
        self._loc = None

    def __len__(self) -> int:
        return len(self.hashes) - self.start

    def _read(self, uri: str) -> bytes:
        if uri.startswith(STORE_URI):
            if self._loc is None:
                self._loc = resolve(self.store_url)
            try:
                data = self._loc.fs.cat_file(self._loc.path(uri[len(STORE_URI) :]))
            except FileNotFoundError as e:
                raise ImageReadError("missing", uri, f"not in the store ({e})") from e
            except OSError as e:
                raise ImageReadError("unreadable", uri, f"{type(e).__name__}: {e}") from e
            if not data:
                raise ImageReadError("empty", uri, "the file is zero bytes long")
            return data
        return read_file_bytes(uri)

    def __getitem__(self, index: int) -> Decoded:
        i = self.start + index
        image_hash = self.hashes[i].as_py()
        uri = self.uris[i].as_py()
        t0 = time.perf_counter()
        if uri is None:
            failure = Failure(image_hash, None, "bad_row", "the image has no row in the images table")
            return Decoded(image_hash, None, None, failure, 0.0, 0.0)
        try:
            data = self._read(uri)
        except ImageReadError as e:
            return Decoded(image_hash, uri, None, Failure(image_hash, uri, e.reason, str(e)), 0.0, 0.0)
        t1 = time.perf_counter()
        try:
            image = decode_image(data, source=uri, study_preprocessing=self.study_preprocessing)
        except ImageReadError as e:
            failure = Failure(image_hash, uri, e.reason, str(e))
            return Decoded(image_hash, uri, None, failure, t1 - t0, time.perf_counter() - t1)
        return Decoded(image_hash, uri, image, None, t1 - t0, time.perf_counter() - t1)


def _preprocess_isolating_failures(
    ok: list[Decoded], preprocessor: Preprocessor, prompt: str | None
) -> tuple[list[Decoded], dict[str, torch.Tensor], list[Failure]]:
    """Preprocess the batch; if the processor rejects it, find the images it rejects one by one.

    A processor error on one image (e.g. an aspect ratio a VLM processor refuses) becomes a ``preprocess``
    failure for that image and the rest of the batch goes on. If every image passes alone, the batch error
    is not about an image and is raised as it is.
    """
    try:
        return ok, preprocessor([d.image for d in ok], prompt), []
    except Exception as batch_error:  # processors raise ValueError, RuntimeError, IndexError, ...
        good: list[Decoded] = []
        failed: list[Failure] = []
        for d in ok:
            try:
                preprocessor([d.image], prompt)
            except Exception as e:  # the processor's own message is kept in the failures row
                failed.append(Failure(d.image_hash, d.uri, "preprocess", f"{type(e).__name__}: {e}"))
            else:
                good.append(d)
        if not failed:
            raise batch_error
        return good, (preprocessor([d.image for d in good], prompt) if good else {}), failed


def collate(items: list[Decoded], *, preprocessor: Preprocessor, prompt: str | None) -> LoadedBatch:
    """The DataLoader's collate step (runs in the workers): preprocess the images that decoded."""
    ok = [d for d in items if d.failure is None]
    t0 = time.perf_counter()
    ok, inputs, rejected = _preprocess_isolating_failures(ok, preprocessor, prompt) if ok else ([], {}, [])
    return LoadedBatch(
        image_hashes=[d.image_hash for d in ok],
        inputs=inputs,
        failures=[d.failure for d in items if d.failure is not None] + rejected,
        n_refs=len(items),
        read_s=sum(d.read_s for d in items),
        decode_s=sum(d.decode_s for d in items),
        preprocess_s=time.perf_counter() - t0,
    )


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and preprocess; intra-op threads would oversubscribe the CPU


def make_loader(
    refs: ImageRefs,
    preprocessor: Preprocessor,
    prompt: str | None,
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    prefetch: int = 2,
) -> DataLoader:
    """A DataLoader over ``refs`` in plan order; at most ``workers * prefetch`` batches are in flight."""
    return DataLoader(
        refs,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=functools.partial(collate, preprocessor=preprocessor, prompt=prompt),
        pin_memory=pin_memory,
        prefetch_factor=prefetch if workers > 0 else None,
        persistent_workers=False,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
