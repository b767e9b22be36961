"""The small ways input used to go wrong: each now fails in one line naming the cause, or reports the truth."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from medprobe.errors import StoreWriteError
from medprobe.featurestore import FeatureStore
from medprobe.featurestore import store as store_module
from medprobe.schemas import DatasetRow
from tests.helpers.cli import run_cli

FAST = ["--c-grid", "0.1,1", "--n-boot", "50", "--cv", "3"]


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (["--c-grid", ","], "names no C value"),
        (["--c-grid", "nan"], "positive finite"),
        (["--c-grid", "-1,1"], "positive finite"),
        (["--seeds", ",", "--train-fraction", "0.5"], "names no seed"),
        (["--train-fraction", "0"], "(0, 1]"),
        (["--n-boot", "-5"], "--n-boot"),
        (["--cv", "1"], "--cv"),
        (["--cv", "100"], "allow at most"),
    ],
)
def test_probe_options_fail_in_one_line(synth_store, capsys, option: list[str], words: str) -> None:
    grid = [] if "--c-grid" in option else ["--c-grid", "0.1,1"]  # list options add up when repeated
    args = ["train", "-t", "grade", "--feature-set", "fs-synth", "-s", synth_store.url, *FAST[2:], *grid, *option]
    code, _, err = run_cli(capsys, *args)
    assert code != 0 and words in err and "Traceback" not in err and err.count("error:") == 1


def test_unknown_split_and_read_only_commands(synth_store, capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "extract", "-d", "synth", "-m", "tiny-random/clip", "--split", "tset",
                           "-s", synth_store.url)  # fmt: skip
    assert code != 0 and "unknown split(s) ['tset']" in err
    typo = tmp_path / "typo"
    for args in (["datasets"], ["sql", "SELECT 1"], ["store", "info"], ["status"]):
        code, _, err = run_cli(capsys, *args, "-s", str(typo))
        assert code != 0 and "no medprobe store" in err
    assert not typo.exists()  # read-only commands never create a store
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run_cli(capsys, "datasets", "-s", str(afile))
    assert code != 0 and "is a file, not a store folder" in err


def test_a_full_disk_names_the_store(tmp_path: Path, monkeypatch) -> None:
    store = FeatureStore.open(str(tmp_path / "s"))

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "append_fragment", full)
    with pytest.raises(StoreWriteError, match=rf"store {store.url}: appending 1 datasets row.*No space left"):
        store.append("datasets", [DatasetRow(dataset="d", format="f", source="s", split_policy="p")])


def test_verify_counts_rows_and_the_report_states_its_replicates(synth_store, capsys, tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "store", "verify", "-s", synth_store.url)
    assert code == 0 and "960 manifest rows" in out  # 240 images x 4 layers
    code, out, err = run_cli(capsys, "sweep", "-t", "grade", "--feature-set", "fs-synth", "-f", "json",
                             "-s", synth_store.url, *FAST)  # fmt: skip
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    code, _, err = run_cli(capsys, "report", run_id, "-o", str(tmp_path / "r"), "-s", synth_store.url)
    assert code == 0, err
    text = (tmp_path / "r" / "summary.md").read_text()
    assert "(50 replicates)" in text and "1,000" not in text and "Warning" not in text
