"""A re-ingest makes a source's members equal to it: rows that left the source are retired, a moved folder is
re-pointed (and `extract` says when files are missing), other sources' members are kept, older stores follow."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medprobe.errors import InvalidInputError
from medprobe.featurestore import FeatureStore
from medprobe.ingestion.pipeline import IngestOptions, ingest
from medprobe.ingestion.records import FormatOptions
from tests.helpers.cli import run_cli

QUIET = IngestOptions(show_progress=False)
OPTS = FormatOptions(label_columns=("label",), group_column="patient")


def _write(folder, n: int, *, skip: tuple[int, ...] = (), salt: int = 0) -> None:
    """``n`` distinct 8x8 images and a manifest naming all but ``skip``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,patient"]
    for i in range(n):
        pixels = np.full((8, 8), (i * 3 + salt) % 256, np.uint8)
        pixels[0, 0] = salt
        Image.fromarray(pixels).save(folder / f"{i}.png")
        if i not in skip:
            lines.append(f"{i}.png,{'ab'[i % 2]},P{i}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")


def _members(store: FeatureStore, dataset: str = "d") -> int:
    store.refresh()
    return store.sql("SELECT count(*) FROM dataset_images WHERE dataset = ?", [dataset]).column(0)[0].as_py()


def test_a_row_removed_from_the_manifest_leaves_the_dataset(tmp_path, store: FeatureStore) -> None:
    _write(tmp_path / "src", 65)
    ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    assert _members(store) == 65
    _write(tmp_path / "src", 65, skip=(7,))
    summary = ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    assert summary.removed == 1 and summary.memberships_new == 0 and summary.already_in_dataset == 64
    assert _members(store) == 64
    gone = store.sql("SELECT source_path FROM raw_dataset_images WHERE retired").column(0).to_pylist()
    assert gone == ["7.png"]  # the history stays
    # a row whose file is now unreadable leaves too (its failure row says why); the rest is untouched
    (tmp_path / "src" / "3.png").write_bytes(b"not an image")
    summary = ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    assert summary.removed == 1 and summary.failures == 1 and _members(store) == 63
    # the row comes back: the member returns with its old split
    split = store.sql("SELECT split FROM raw_dataset_images WHERE source_path = '7.png'").column(0)[0].as_py()
    _write(tmp_path / "src", 65)
    summary = ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    assert summary.memberships_new == 2 and _members(store) == 65
    back = store.sql("SELECT split FROM dataset_images WHERE source_path = '7.png'").column(0)[0].as_py()
    assert back == split
    again = ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    assert again.removed == again.memberships_new == again.moved == again.repointed == 0  # nothing to write


def test_other_sources_of_the_dataset_are_kept(tmp_path, store: FeatureStore) -> None:
    _write(tmp_path / "site1", 6)
    _write(tmp_path / "site2", 5, salt=101)
    ingest(store, tmp_path / "site1" / "m.csv", "csv", "d", OPTS, QUIET)
    ingest(store, tmp_path / "site2" / "m.csv", "csv", "d", OPTS, QUIET)
    assert _members(store) == 11
    _write(tmp_path / "site1", 6, skip=(0, 1))
    summary = ingest(store, tmp_path / "site1" / "m.csv", "csv", "d", OPTS, QUIET)
    assert summary.removed == 2 and _members(store) == 9  # site2's five stay


def test_a_wholly_unreadable_source_retires_nothing(tmp_path, store: FeatureStore) -> None:
    _write(tmp_path / "src", 4)
    ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    for i in range(4):
        (tmp_path / "src" / f"{i}.png").unlink()
    with pytest.raises(InvalidInputError, match=r"not one image.*none of the 4 members.*is retired"):
        ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    assert _members(store) == 4


def test_a_moved_folder_is_re_pointed_and_extract_says_when_files_are_missing(tmp_path, store, capsys) -> None:
    _write(tmp_path / "old", 5)
    url = store.url
    ingest_args = ["ingest", "--layout", "csv", "-d", "d", "--label-column", "label", "--group-column", "patient",
                   "-s", url, "--no-progress", "-f", "json"]  # fmt: skip
    code, _, err = run_cli(capsys, *ingest_args[:1], str(tmp_path / "old" / "m.csv"), *ingest_args[1:])
    assert code == 0, err
    shutil.move(tmp_path / "old", tmp_path / "new")
    extract = ["extract", "-s", url, "-d", "d", "-m", "tiny-random/vit", "-l", "-1", "--decode-workers", "0",
               "--no-progress", "-f", "json"]  # fmt: skip
    code, out, err = run_cli(capsys, *extract)
    assert code == 3 and "5 image file(s) of dataset 'd' are missing" in err and "re-ingest" in err, err
    assert json.loads(out)["failures_by_reason"] == {"missing": 5}  # the summary is shown before the error
    code, out, err = run_cli(capsys, *ingest_args[:1], str(tmp_path / "new" / "m.csv"), *ingest_args[1:])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["repointed"] == 5 and doc["moved"] == 5 and doc["removed"] == 0 and doc["memberships_new"] == 0
    uris = store.sql("SELECT uri FROM images").column(0).to_pylist()
    assert all(u.startswith(str(tmp_path / "new")) for u in uris) and len(uris) == 5
    code, out, err = run_cli(capsys, *extract)
    assert code == 0 and json.loads(out)["images_committed"] == 5, err


def test_members_of_an_older_store_belong_to_the_datasets_only_source(tmp_path, store: FeatureStore) -> None:
    """Format-4 membership rows have no `source`: theirs is the dataset's source when it has just one."""
    _write(tmp_path / "src", 6)
    ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    for fragment in (tmp_path / store.url / "tables" / "dataset_images").glob("*.parquet"):
        pq.write_table(pq.read_table(fragment).drop_columns(["source", "metadata"]), fragment)  # as format 4 wrote
    store = FeatureStore.open(store.url)
    assert store.sql("SELECT count(*) FROM dataset_images WHERE source IS NULL AND metadata IS NULL"
                     ).column(0)[0].as_py() == 6  # fmt: skip
    _write(tmp_path / "src", 6, skip=(2,))
    summary = ingest(store, tmp_path / "src" / "m.csv", "csv", "d", OPTS, QUIET)
    assert summary.removed == 1 and summary.moved == 0 and _members(store) == 5
    assert store.sql("SELECT count(*) FROM dataset_images WHERE source IS NULL").column(0)[0].as_py() == 0
