"""Data migrations of older store formats (``schemas.version.CHANGES``), run before the first write."""

from __future__ import annotations

from medprobe.featurestore.catalog import Catalog
from medprobe.featurestore.fragments import append_fragment, to_arrow
from medprobe.featurestore.fsio import Location


def mark_vqa_item_rows(loc: Location, catalog: Catalog) -> None:
    """Format 4: the members of datasets of format 'vqa' (VQA items registered as probe rows by ``vqa run
    --save-activations``) are re-appended with ``row_kind = 'vqa_item'``; the latest row wins, so running this
    twice (a kill before the marker is rewritten) is harmless."""
    rows = catalog.query(
        "SELECT di.* REPLACE ('vqa_item' AS row_kind, now()::TIMESTAMPTZ AS ingested_at) FROM dataset_images di "
        "JOIN datasets d USING (dataset) WHERE d.format = 'vqa' AND di.row_kind = 'image'"
    )
    if rows.num_rows:
        append_fragment(loc, "dataset_images", to_arrow("dataset_images", rows))
        catalog.refresh(["dataset_images"])
