"""A truncated fragment or a broken segment: reported by name, the rest stays readable, and it can be moved aside."""

from __future__ import annotations

import json

from medprobe.featurestore import FeatureStore
from medprobe.featurestore.fragments import list_fragments
from tests.helpers.cli import run_cli


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(40)


def test_a_truncated_fragment_is_named_skipped_and_moved_aside(synth_store: FeatureStore, capsys) -> None:
    url = synth_store.url
    victim = list_fragments(synth_store.loc, "tasks")[0]["name"]
    _truncate(victim)
    code, out, err = run_cli(capsys, "sql", "SELECT count(*) AS n FROM dataset_images", "-f", "json", "-s", url)
    assert code == 0, err
    assert json.loads(out) == [{"n": 240}]  # the rest of the store reads
    assert "unreadable fragment" in err and "quarantine" in err  # never silently: every command says so
    code, out, err = run_cli(capsys, "store", "verify", "--quick", "-s", url)
    assert code != 0 and victim in out
    code, out, err = run_cli(capsys, "store", "quarantine", "--quick", "-s", url)
    assert code == 0, err
    assert "moved 1 file(s)" in out
    code, out, err = run_cli(capsys, "store", "verify", "-s", url)
    assert code == 0 and "OK" in out and "unreadable" not in err


def test_a_broken_segment_becomes_missing_rows_that_extraction_redoes(synth_store: FeatureStore, capsys) -> None:
    url = synth_store.url
    sid = synth_store.sql("SELECT DISTINCT segment_id FROM raw_activations").column(0)[0].as_py()
    layer_dir = synth_store.loc.path("segments", sid, "layer_0002")
    chunk = next(p for p in synth_store.loc.fs.ls(layer_dir) if "zarr.json" not in p)
    synth_store.loc.fs.rm(chunk)
    code, out, _ = run_cli(capsys, "store", "verify", "--quick", "-s", url)
    assert code != 0 and sid in out and "verify found" not in out
    code, out, err = run_cli(capsys, "store", "quarantine", "--quick", "-f", "json", "-s", url)
    assert code == 0, err
    assert json.loads(out)["rows_hidden"] == 240 * 4
    store = FeatureStore.open(url, create=False)
    assert store.existing("fs-synth").num_rows == 0  # every row of that segment is missing, so extract redoes it
    code, out, _ = run_cli(capsys, "store", "verify", "-s", url)
    assert code == 0 and "OK" in out


def test_a_deleted_commit_marker_is_found_by_verify_kept_by_gc_and_restored(tmp_path, capsys) -> None:
    """The hostile check: deleting txns/<id>.json made an ingest vanish while verify said OK."""
    import numpy as np
    from PIL import Image

    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i + (cls == "b"), np.uint8)).save(src / cls / f"{i}.png")
    url = str(tmp_path / "store")
    code, _, err = run_cli(capsys, "ingest", str(src), "--layout", "imagefolder", "-d", "k", "-s", url, "--no-progress")
    assert code == 0, err
    store = FeatureStore.open(url, create=False)
    (txid,) = store.sql("SELECT transactions FROM runs WHERE kind = 'ingest'").column(0)[0].as_py()
    (tmp_path / "store" / "txns" / f"{txid}.json").unlink()
    count = "SELECT count(*) AS n FROM dataset_images"
    code, out, err = run_cli(capsys, "sql", count, "-f", "json", "-s", url)
    assert json.loads(out) == [{"n": 0}]  # the ingest's rows are invisible ...
    code, out, err = run_cli(capsys, "store", "verify", "--quick", "-s", url)
    assert code == 4 and f"commit marker txns/{txid}.json is gone" in out, out + err  # ... and verify says so
    import datetime as dt

    from medprobe.featurestore import gc_store

    gone = gc_store(FeatureStore.open(url), dt.timedelta(0), min_grace=dt.timedelta(0))  # as if long ago
    assert not [p for p in gone.removed_temp_files if txid in p]  # gc never removes a recorded transaction's rows
    code, out, err = run_cli(capsys, "store", "quarantine", "--quick", "-s", url, "-f", "json")
    assert code == 0 and json.loads(out)["restored_markers"], err
    code, out, err = run_cli(capsys, "sql", count, "-f", "json", "-s", url)
    assert json.loads(out) == [{"n": 6}]
    code, _, err = run_cli(capsys, "store", "verify", "-s", url)
    assert code == 0, err
