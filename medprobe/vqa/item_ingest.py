"""``medprobe vqa ingest``: items into ``vqa_items``, their images content-addressed into ``images``.

Images are identified by the sha256 of their bytes, as ``medprobe ingest`` does, so an image shared by several
questions (VQA-RAD) or already in an image dataset is stored once. An unreadable image becomes a ``failures`` row
(stage ``vqa-ingest``) and its item is left out; nothing else is lost. Re-ingesting the same source writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medprobe.errors import InvalidInputError
from medprobe.featurestore import new_id
from medprobe.imaging import ImageReadError, blob_path, inspect_image, read_file_bytes
from medprobe.schemas import FailureRow, ImageRow
from medprobe.schemas.tables import VqaItemRow
from medprobe.vqa.items import ReadReport, detect_layout, read_items

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


@dataclass
class VqaIngestSummary:
    """What one ``vqa ingest`` did."""

    item_set: str
    layout: str
    items_read: int = 0
    items_new: int = 0
    items_unchanged: int = 0
    images_new: int = 0
    failures: int = 0
    by_split: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)


def _same(row: VqaItemRow, old: dict) -> bool:
    keys = ("image_hashes", "question", "context", "options", "answer", "group_id", "category", "split")
    return all(getattr(row, k) == old.get(k) for k in keys)


def ingest_items(store: FeatureStore, source: str | Path, name: str, layout: str | None = None) -> VqaIngestSummary:
    """Read ``source`` (layout detected unless given) into the item set ``name``."""
    if not name or any(c in name for c in "/\\'\""):
        raise InvalidInputError(f"--name {name!r}: give a plain name for the item set, e.g. vqa-rad")
    src = Path(source).expanduser()
    layout = layout or detect_layout(src)
    report = ReadReport()
    items = list(read_items(src, layout, report))
    summary = VqaIngestSummary(item_set=name, layout=layout, items_read=len(items))
    known = set(store.sql("SELECT image_hash FROM images").column("image_hash").to_pylist())
    hashes: dict[object, str | None] = {}  # image path (or id of embedded bytes) -> hash
    images: list[ImageRow] = []
    failures: list[FailureRow] = []
    sources = {id(p) if isinstance(p, bytes) else p: (it.item_id, p) for it in items for p in it.images}
    for key, (item_id, image) in sources.items():
        where = str(image) if isinstance(image, Path) else f"{src.name}: item {item_id} (embedded image)"
        try:
            data = image if isinstance(image, bytes) else read_file_bytes(str(image))
            info = inspect_image(data, source=where)
        except ImageReadError as e:
            hashes[key] = None
            failures.append(FailureRow(failure_id=new_id("failure"), stage="vqa-ingest", dataset=name,
                                       path=where, reason=e.reason, error=str(e)))  # fmt: skip
            continue
        h = hashlib.sha256(data).hexdigest()
        hashes[key] = h
        if h not in known:
            known.add(h)
            if isinstance(image, bytes):  # embedded: the store keeps the bytes (as `ingest --copy` does)
                uri, in_store = store.put_bytes(blob_path(h, info.format), data), True
            else:
                uri, in_store = str(image.resolve()), False
            images.append(ImageRow(image_hash=h, uri=uri, in_store=in_store, width=info.width, height=info.height,
                                   mode=info.mode, bit_depth=info.bit_depth, format=info.format,
                                   n_bytes=len(data)))  # fmt: skip
    old = {
        r["item_id"]: r
        for r in store.sql("SELECT * FROM vqa_items WHERE item_set = ?", [name]).to_pylist()
    }
    rows = []
    for it in items:
        hs = [hashes[id(p) if isinstance(p, bytes) else p] for p in it.images]
        if any(h is None for h in hs):
            summary.failures += 1
            continue
        row = VqaItemRow(
            item_set=name, item_id=it.item_id, image_hashes=[h for h in hs if h], question=it.question,
            context=it.context, options=json.dumps(it.options), answer=it.answer, group_id=it.group_id,
            category=it.category, split=it.split, source_path=it.source_path,
        )  # fmt: skip
        summary.by_split[it.split] = summary.by_split.get(it.split, 0) + 1
        if it.item_id in old and _same(row, old[it.item_id]):
            summary.items_unchanged += 1
            continue
        rows.append(row)
    with store.transaction():  # images, items and failures become visible together
        store.append("images", images)
        store.append("vqa_items", rows)
        store.append("failures", failures)
    summary.items_new, summary.images_new = len(rows), len(images)
    summary.skipped, summary.skipped_examples = report.skipped, report.examples
    return summary
