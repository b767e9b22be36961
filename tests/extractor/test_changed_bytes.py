"""A file overwritten after ingest: extraction refuses its new bytes under the old hash; re-ingest retires it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from medprobe.adapters.loading import load_adapter
from medprobe.extractor.pipeline import ExtractOptions, extract
from medprobe.featurestore import FeatureStore
from medprobe.ingestion.pipeline import IngestOptions, ingest
from medprobe.ingestion.records import FormatOptions

QUIET = IngestOptions(show_progress=False)


def test_changed_bytes_are_never_extracted_under_the_old_hash(tmp_path, store: FeatureStore) -> None:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "src" / cls / f"{i}.png")
    ingest(store, tmp_path / "src", "imagefolder", "d", FormatOptions(), QUIET)
    victim = tmp_path / "src" / "a" / "1.png"
    old_hash = store.sql("SELECT image_hash FROM dataset_images WHERE source_path = 'a/1.png'").column(0)[0].as_py()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(victim)  # new pixels, same path

    adapter = load_adapter("tiny-random/clip")
    opts = ExtractOptions(dataset="d", model="tiny-random/clip", layers="-1", workers=0, batch_size=4)
    summary = extract(store, opts, adapter=adapter, show_progress=False)
    assert summary["failures"] == 1 and summary["images_committed"] == 5
    failure = store.sql("SELECT reason, image_hash FROM failures WHERE stage = 'extract'").to_pylist()
    assert failure == [{"reason": "hash_mismatch", "image_hash": old_hash}]
    assert store.sql("SELECT count(*) FROM activations WHERE image_hash = ?", [old_hash]).column(0)[0].as_py() == 0

    again = ingest(store, tmp_path / "src", "imagefolder", "d", FormatOptions(), QUIET)
    assert again.retired == 1 and again.memberships_new == 1
    assert store.sql("SELECT count(*) FROM dataset_images WHERE source_path = 'a/1.png'").column(0)[0].as_py() == 1
    summary = extract(store, opts, adapter=adapter, show_progress=False)
    assert summary["failures"] == 0 and summary["images_committed"] == 1  # only the new image
