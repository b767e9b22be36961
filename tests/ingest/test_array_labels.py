"""Array sources (MedMNIST layout): labels that are not class indices and float images are never silently wrong."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.ingestion.formats.arrays import as_image_array
from medprobe.ingestion.pipeline import IngestOptions, ingest
from medprobe.ingestion.records import FormatOptions

QUIET = IngestOptions(show_progress=False)


def _npz(path, images: np.ndarray, labels: np.ndarray) -> None:
    test_images = images[:2][:, ::-1] + 0 if images.dtype.kind == "f" else 255 - images[:2]  # other pixels
    np.savez(path, train_images=images, train_labels=labels, test_images=test_images, test_labels=labels[:2])


def test_bad_labels_become_failures_and_float_images_are_scaled(tmp_path, store: FeatureStore) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((6, 8, 8)).astype(np.float32)  # normalised to [0, 1]
    labels = np.array([[0.0], [1.0], [-1.0], [1.7], [np.nan], [1.0]])
    _npz(tmp_path / "x.npz", images, labels)
    summary = ingest(store, tmp_path / "x.npz", "medmnist", "x", FormatOptions(), QUIET)
    assert summary.failures_by_reason == {"bad_row": 3}
    errors = store.sql("SELECT path, error FROM failures ORDER BY path").to_pylist()
    assert [e["path"].rsplit(":", 1)[1] for e in errors] == ["train_labels[2]", "train_labels[3]", "train_labels[4]"]
    labels_seen = store.sql("SELECT labels FROM dataset_images").column(0).to_pylist()
    assert all('"1"' in v or '"0"' in v for v in labels_seen)  # -1 never became the last class
    row = store.sql("SELECT uri FROM images LIMIT 1").column(0)[0].as_py()
    with Image.open(io.BytesIO(store.read_bytes(row))) as im:
        assert np.asarray(im).max() > 100  # scaled by 255, not truncated to a black image


def test_a_label_past_the_declared_classes_is_a_bad_row(tmp_path, store: FeatureStore) -> None:
    images = np.arange(3 * 16, dtype=np.uint8).reshape(3, 4, 4)
    _npz(tmp_path / "y.npz", images, np.array([[0], [1], [2]]))
    summary = ingest(store, tmp_path / "y.npz", "medmnist", "y", FormatOptions(class_names=("a", "b")), QUIET)
    assert summary.failures_by_reason == {"bad_row": 1}


@pytest.mark.parametrize(
    ("array", "expected_max"),
    [
        (np.array([[0.0, 1.0]], np.float32), 255),
        (np.array([[0.0, 200.4]], np.float64), 200),
        (np.array([[0, 255]], np.int64), 255),
        (np.array([[0, 4000]], np.uint16), 4000),
    ],
)
def test_image_arrays_scale_as_a_whole(array: np.ndarray, expected_max: int) -> None:
    assert int(as_image_array(array, "a").max()) == expected_max


@pytest.mark.parametrize("array", [np.array([[-1.0, 0.5]]), np.array([[0, 300]], np.int32), np.array([[np.nan]])])
def test_image_arrays_out_of_range_are_refused(array: np.ndarray) -> None:
    with pytest.raises(InvalidInputError, match="a:"):
        as_image_array(array, "a")


def test_urls_loose_files_and_multi_page_images_are_reported(tmp_path, store: FeatureStore) -> None:
    """A URL row is that row's failure (not the whole ingest's); loose files and extra pages are counted."""
    from medprobe.ingestion.records import FormatOptions as Opts

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,x\nb.png,y\nfoo://e.png,x\nhttp://example.invalid/c.png,y\n")
    summary = ingest(store, tmp_path / "m.csv", "csv", "u", Opts(label_columns=("label",)), QUIET)
    # foo:// has no filesystem (unreadable); the http URL is unreadable without aiohttp, missing with it (s3fs
    # brings aiohttp): either way a failure row of its own, and the rest is ingested
    assert summary.memberships_new == 2 and sum(summary.failures_by_reason.values()) == 2
    assert set(summary.failures_by_reason) <= {"unreadable", "missing"}
    folder = tmp_path / "tf"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 3 if name == "cat" else 90, np.uint8)).save(folder / name / "x.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "loose.png")
    pages = [Image.fromarray(np.full((8, 8), 40 * i, np.uint8)) for i in range(3)]
    pages[0].save(folder / "dog" / "multi.tif", save_all=True, append_images=pages[1:])
    summary = ingest(store, folder, "imagefolder", "tf", Opts(), QUIET)
    assert summary.excluded == {"image files outside a class folder (no label)": 1}
    assert summary.notes == {"multi-page/multi-frame images (the first page is used)": 1}
