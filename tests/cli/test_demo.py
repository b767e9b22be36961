"""`medprobe demo` end to end on a small generated dataset: ingest -> extract -> sweep -> report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.featurestore import FeatureStore
from medprobe.synthetic.tissue import CLASSES, write_demo_dataset
from tests.helpers.cli import run_subprocess


def test_demo_data_is_seeded_and_grouped(tmp_path: Path) -> None:
    a = write_demo_dataset(tmp_path / "a", patients=4, tiles_per_patient=2, seed=3)
    b = write_demo_dataset(tmp_path / "b", patients=4, tiles_per_patient=2, seed=3)
    assert a.read_text() == b.read_text()
    rows = a.read_text().splitlines()[1:]
    assert len(rows) == 8
    first = rows[0].split(",")[0]
    assert np.array_equal(np.asarray(Image.open(a.parent / first)), np.asarray(Image.open(b.parent / first)))
    labels = {r.split(",")[1] for r in rows}
    assert labels <= set(CLASSES) and len(labels) >= 2


def test_demo_end_to_end(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {"MEDPROBE_STORE": str(store)}
    proc = run_subprocess(["demo", "--patients", "8", "--out", str(tmp_path / "demo")], env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = tmp_path / "demo" / "report"
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert "layer_curve.png" in pngs and any(p.startswith("roc_") for p in pngs)
    for p in report.glob("*.png"):
        with Image.open(p) as im:
            assert im.size[0] > 300 and im.size[1] > 300
    assert "macro AUC" in (report / "summary.md").read_text()

    s = FeatureStore.open(str(store), create=False)
    results = s.sql("SELECT layer, metrics FROM probe_results ORDER BY layer").to_pylist()
    assert [r["layer"] for r in results] == list(range(17))  # every EfficientNet-Lite0 layer was probed
    aucs = [json.loads(r["metrics"])["macro_auc"]["value"] for r in results]
    assert all(a is not None and 0.0 <= a <= 1.0 for a in aucs), aucs  # every class is in the demo's test split
    assert max(aucs) > 0.9, aucs  # the synthetic tissue classes are separable: a probe must find them
    n = s.sql("SELECT count(*) AS n FROM dataset_images WHERE dataset = 'demo-synthetic-tissue'").column(0)[0].as_py()
    assert n == 48
    # a second run reuses everything stored: ingest and extraction are no-ops
    again = run_subprocess(["demo", "--patients", "8", "--out", str(tmp_path / "demo")], env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = s.sql("SELECT count(*) FROM raw_activations").column(0)[0].as_py()
    assert rows == 48 * 17
