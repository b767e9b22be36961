"""``medprobe vqa ingest``: items into ``vqa_items``, their images content-addressed into ``images``.

Images are identified by the sha256 of their bytes, as ``medprobe ingest`` does, so an image shared by several
questions (VQA-RAD) or already in an image dataset is stored once. An unreadable image becomes a ``failures`` row
(stage ``vqa-ingest``) and its item is left out; nothing else is lost. Re-ingesting the same source writes nothing;
re-ingesting a changed source makes the item set equal to it: changed items win, items it no longer holds (or whose
images are now unreadable) are retired (the latest row wins; history stays in ``raw_vqa_items``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medprobe.errors import InvalidInputError
from medprobe.featurestore import new_id
from medprobe.ingestion.hashing import add_images, image_row
from medprobe.ingestion.records import SourceRecord
from medprobe.schemas import FailureRow, ImageRow, utcnow
from medprobe.schemas.tables import VqaItemRow
from medprobe.vqa.items import ReadReport, SourceItem
from medprobe.vqa.sources import detect_layout, read_items

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
    items_retired: int = 0  # in the item set before, not in the source now (or its image is unreadable)
    images_new: int = 0
    failures: int = 0
    by_split: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)  # multiple choice / open-ended
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)


def _same(row: VqaItemRow, old: dict) -> bool:
    keys = ("image_hashes", "question", "context", "options", "answer", "group_id", "category", "split", "categories")
    return all(getattr(row, k) == old.get(k) for k in keys)


def _add_item_images(store: FeatureStore, src: Path, name: str, items: list[SourceItem]
                     ) -> tuple[dict[object, str | None], list[ImageRow], list[FailureRow]]:  # fmt: skip
    """The items' images through the one image ingest (hash, check, embedded bytes into the store's blobs): each
    image's hash (None: unreadable), the new ``images`` rows and a ``failures`` row per unreadable image."""
    known = set(store.sql("SELECT image_hash FROM images").column("image_hash").to_pylist())
    before = set(known)
    sources = {id(p) if isinstance(p, bytes) else p: (it.item_id, p) for it in items for p in it.images}
    records = [
        SourceRecord(source_path=f"{src.name}: item {item_id} (embedded image)", labels={}, data=image)
        if isinstance(image, bytes) else SourceRecord(source_path=str(image), labels={}, uri=str(image.resolve()))
        for item_id, image in sources.values()
    ]  # fmt: skip
    probes = add_images(store, records, known=known)
    hashes: dict[object, str | None] = {}  # image path (or id of embedded bytes) -> hash
    images: list[ImageRow] = []
    failures: list[FailureRow] = []
    for key, record, probe in zip(sources, records, probes, strict=True):
        hashes[key] = probe.image_hash if probe.ok else None
        if not probe.ok:
            failures.append(FailureRow(failure_id=new_id("failure"), stage="vqa-ingest", dataset=name,
                                       path=record.source_path, reason=probe.reason or "corrupt",
                                       error=probe.error or ""))  # fmt: skip
        elif probe.image_hash not in before:
            before.add(probe.image_hash or "")
            images.append(image_row(probe, record))
    return hashes, images, failures


def ingest_items(store: FeatureStore, source: str | Path, name: str, layout: str | None = None) -> VqaIngestSummary:
    """Read ``source`` (layout detected unless given) into the item set ``name``."""
    if not name or any(c in name for c in "/\\'\""):
        raise InvalidInputError(f"--name {name!r}: give a plain name for the item set, e.g. vqa-rad")
    src = Path(source).expanduser()
    layout = layout or detect_layout(src)
    report = ReadReport()
    items = list(read_items(src, layout, report))
    summary = VqaIngestSummary(item_set=name, layout=layout, items_read=len(items))
    hashes, images, failures = _add_item_images(store, src, name, items)
    old = {
        r["item_id"]: r
        for r in store.sql("SELECT * FROM vqa_items WHERE item_set = ?", [name]).to_pylist()
    }
    rows = []
    current: set[str] = set()
    for it in items:
        hs = [hashes[id(p) if isinstance(p, bytes) else p] for p in it.images]
        if any(h is None for h in hs):
            summary.failures += 1
            continue
        row = VqaItemRow(
            item_set=name, item_id=it.item_id, image_hashes=[h for h in hs if h], question=it.question,
            context=it.context, options=json.dumps(it.options), answer=it.answer, group_id=it.group_id,
            category=it.category, split=it.split, source_path=it.source_path,
            categories=json.dumps(it.categories, sort_keys=True) if it.categories else None,
        )  # fmt: skip
        summary.by_split[it.split] = summary.by_split.get(it.split, 0) + 1
        kind = "multiple choice" if it.options else "open-ended"
        summary.by_kind[kind] = summary.by_kind.get(kind, 0) + 1
        current.add(it.item_id)
        if it.item_id in old and _same(row, old[it.item_id]):
            summary.items_unchanged += 1
            continue
        rows.append(row)
    gone = [VqaItemRow(**{**old[i], "retired": True, "ingested_at": utcnow()}) for i in sorted(set(old) - current)]
    summary.items_retired = len(gone)
    rows += gone
    with store.transaction():  # images, items and failures become visible together
        store.append("images", images)
        store.append("vqa_items", rows)
        store.append("failures", failures)
    summary.items_new, summary.images_new = len(rows) - len(gone), len(images)
    summary.skipped, summary.skipped_examples = report.skipped, report.examples
    return summary
