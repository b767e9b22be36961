"""Planned images -> a DataLoader that reads, decodes and preprocesses them in worker processes.

Batches flow through a DataLoader with a bounded prefetch, so host memory depends on the batch size and worker
count, never on the dataset size. An image that cannot be read or preprocessed becomes a ``Failure``; the rest of
its batch goes on.

With ``device_decode`` the workers leave plain JPEGs encoded and skip preprocessing: the batch carries ``pending``
images (encoded bytes or decoded uint8 tensors) that the pipeline decodes and preprocesses on the model's device
(:mod:`medprobe.adapters.device_decode`).
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

from medprobe.adapters.adapter import Preprocessor
from medprobe.adapters.device_decode import (
    JPEG_MAGIC,
    DevicePreprocess,
    decode_batch,
    encoded_tensor,
    pil_to_chw,
    timed,
    travels_encoded,
)
from medprobe.featurestore import STORE_URI, StoreBlobs
from medprobe.imaging import ImageReadError, decode_image, jpeg_is_complete, open_image_header, read_file_bytes


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
    image: Any  # PIL image, encoded JPEG bytes (a 1-D uint8 tensor, ``encoded``), or None on failure
    failure: Failure | None
    read_s: float
    decode_s: float
    encoded: bool = False


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
    # device decoding: per image of ``image_hashes``, encoded JPEG bytes or a decoded uint8 (3, H, W) tensor
    pending: list[torch.Tensor] | None = None
    pending_encoded: list[bool] | None = None
    pending_uris: list[str | None] | None = None

    def pin_memory(self) -> LoadedBatch:
        """Called by the DataLoader's pin-memory thread on CUDA."""
        self.inputs = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        if self.pending is not None:
            self.pending = [t.pin_memory() for t in self.pending]
        return self


class ImageRefs(Dataset):
    """Map-style dataset over the plan's ``(image_hash, uri)`` arrays from ``start``; returns decoded images."""

    def __init__(
        self,
        todo: pa.Table,
        store_url: str,
        *,
        start: int = 0,
        study_preprocessing: bool = False,
        device_decode: bool = False,
    ) -> None:
        self.hashes = todo.column("image_hash").combine_chunks()
        self.uris = todo.column("uri").combine_chunks()
        self.store_url = store_url
        self.start = start
        self.study_preprocessing = study_preprocessing
        self.device_decode = device_decode  # plain JPEGs stay encoded (decoded on the model's device)
        self._blobs = StoreBlobs(store_url)

    def __len__(self) -> int:
        return len(self.hashes) - self.start

    def _read(self, uri: str) -> bytes:
        if uri.startswith(STORE_URI):
            try:
                data = self._blobs.read(uri)
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
        digest = hashlib.sha256(data).hexdigest()
        if digest != image_hash:  # the file changed since ingest: these are not the bytes the hash names
            failure = Failure(image_hash, uri, "hash_mismatch", f"{uri}: its bytes now hash to {digest}, not to "
                              f"the ingested {image_hash}; re-ingest the dataset to pick up the new file")  # fmt: skip
            return Decoded(image_hash, uri, None, failure, time.perf_counter() - t0, 0.0)
        t1 = time.perf_counter()
        if self.device_decode and data[:3] == JPEG_MAGIC:
            try:
                header = open_image_header(data, uri)  # the header only: size limit, mode, EXIF
            except ImageReadError as e:
                failure = Failure(image_hash, uri, e.reason, str(e))
                return Decoded(image_hash, uri, None, failure, t1 - t0, time.perf_counter() - t1)
            if travels_encoded(header) and jpeg_is_complete(data):  # a truncated file fails on the PIL path
                return Decoded(image_hash, uri, encoded_tensor(data), None, t1 - t0, 0.0, encoded=True)
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


def collate(items: list[Decoded], *, preprocessor: Preprocessor | None, prompt: str | None) -> LoadedBatch:
    """The DataLoader's collate step (runs in the workers): preprocess the images that decoded; without a
    ``preprocessor`` (device decoding) hand them on as encoded bytes or uint8 tensors instead."""
    ok = [d for d in items if d.failure is None]
    t0 = time.perf_counter()
    if preprocessor is None:
        return LoadedBatch(
            image_hashes=[d.image_hash for d in ok],
            inputs={},
            failures=[d.failure for d in items if d.failure is not None],
            n_refs=len(items),
            read_s=sum(d.read_s for d in items),
            decode_s=sum(d.decode_s for d in items),
            preprocess_s=0.0,
            pending=[d.image if d.encoded else pil_to_chw(d.image) for d in ok],
            pending_encoded=[d.encoded for d in ok],
            pending_uris=[d.uri for d in ok],
        )
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


def decode_on_cpu(data: bytes, source: str) -> torch.Tensor:
    """The PIL path's decode as a uint8 (3, H, W) RGB tensor (the device decoder's fallback)."""
    return pil_to_chw(decode_image(data, source=source))


def finish_on_device(batch: LoadedBatch, preprocess: DevicePreprocess, device: torch.device) -> LoadedBatch:
    """Decode a batch's pending images on ``device`` and preprocess them there; images that cannot be decoded
    become failures, as on the PIL path. Stage times are measured with the device synchronised."""
    pending, encoded, uris = batch.pending, batch.pending_encoded, batch.pending_uris
    if pending is None or encoded is None or uris is None:
        return batch
    sources = [u or h for u, h in zip(uris, batch.image_hashes, strict=True)]
    result, decode_s = timed(device, lambda: decode_batch(pending, encoded, sources, device, decode_on_cpu))
    failures = [Failure(batch.image_hashes[i], uris[i], reason, msg) for i, (reason, msg) in result.failed.items()]
    inputs, preprocess_s = timed(device, lambda: preprocess(result.images)) if result.images else ({}, 0.0)
    return replace(
        batch,
        image_hashes=[batch.image_hashes[i] for i in result.kept],
        inputs=inputs,
        failures=batch.failures + failures,
        decode_s=batch.decode_s + decode_s,
        preprocess_s=batch.preprocess_s + preprocess_s,
        pending=None,
        pending_encoded=None,
        pending_uris=None,
    )


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and preprocess; intra-op threads would oversubscribe the CPU


def make_loader(
    refs: ImageRefs,
    preprocessor: Preprocessor | None,
    prompt: str | None,
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    prefetch: int = 2,
) -> DataLoader:
    """A DataLoader over ``refs`` in plan order; at most ``workers * prefetch`` batches are in flight. Without a
    ``preprocessor`` the batches carry their images for the device stage."""
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
