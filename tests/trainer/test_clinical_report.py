"""`medprobe report` draws the clinical results: ROC curves with the operating points marked, a reliability diagram,
a subgroup forest plot (PNGs a person can open), and summary.md tables including the external test sets."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

import medprobe
from tests.helpers.cli import run_cli
from tests.helpers.datasets_copy import copy_dataset
from tests.trainer.test_subgroups import _add_metadata


def test_report_shows_operating_points_calibration_subgroups_and_external_sets(synth_store, tmp_path, capsys):
    _add_metadata(synth_store)
    copy_dataset(synth_store, "site2", ("test",))
    run = medprobe.train(task="grade", dataset="synth", feature_set="fs-synth", layers="3", cv=3, c_grid="0.1,1",
                         n_boot=50, subgroup="sex", test_dataset="site2", no_progress=True,
                         store=synth_store)  # fmt: skip
    out = tmp_path / "report"
    code, _, err = run_cli(capsys, "report", run.run_id, "-o", str(out), "-s", synth_store.url)
    assert code == 0, err
    pngs = {p.name.split("_")[0] for p in out.glob("*.png")}
    assert {"roc", "reliability", "subgroups"} <= pngs
    for png in out.glob("*.png"):
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 200
    summary = (out / "summary.md").read_text()
    for heading in ("## Calibration", "## Operating points", "## Subgroups", "## External test sets"):
        assert heading in summary
    assert "| site2 |" in summary and "largest gap" in summary
    assert Path(out / "summary.md").stat().st_size > 0
