"""One ingest at a time per dataset; a shipped split that puts a patient on two sides is reported."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medprobe.featurestore import FeatureStore
from medprobe.ingestion.lock import DatasetBusyError, dataset_lock
from medprobe.ingestion.pipeline import IngestOptions, ingest
from medprobe.ingestion.records import FormatOptions
from tests.helpers.cli import run_cli

QUIET = IngestOptions(show_progress=False)


def _collection(folder, n_patients: int, offset: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,patient"]
    for p in range(n_patients):
        for k in range(2):
            name = f"p{p}_{k}.png"
            Image.fromarray(np.full((8, 8), (offset + 2 * p + k) % 256, np.uint8)).save(folder / name)
            lines.append(f"{name},{'ab'[p % 2]},P{p}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")


def test_a_second_ingest_into_a_busy_dataset_is_refused(store: FeatureStore) -> None:
    with dataset_lock(store, "d"):
        with pytest.raises(DatasetBusyError, match="being changed by another ingest"), dataset_lock(store, "d"):
            pass
        with dataset_lock(store, "other"):  # another dataset is free
            pass
    with dataset_lock(store, "d"):  # released
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over(store: FeatureStore) -> None:
    import json
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    body = {"pid": int(dead.stdout), "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00"}
    store.file_area("locks").write_atomic(f"ingest-{b'd'.hex()}.json", json.dumps(body).encode())
    with dataset_lock(store, "d"):
        pass


def test_concurrent_ingests_never_leak_patients(tmp_path) -> None:
    """Two processes ingest overlapping patients into one dataset at once: no patient ends up on two sides."""
    url = str(tmp_path / "store")
    FeatureStore.open(url)
    for name, offset in (("a", 0), ("b", 100)):
        _collection(tmp_path / name, 30, offset)
    cmd = [sys.executable, "-m", "medprobe.cli.main", "ingest"]
    common = ["--layout", "csv", "-d", "shared", "--label-column", "label", "--group-column", "patient", "-s", url]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([*cmd, str(tmp_path / n / "m.csv"), *common], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for n in ("a", "b")
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    busy = [err for _, err in outs if "being changed by another ingest" in err]
    assert sorted(codes) in ([0, 0], [0, 1]) and len(busy) == codes.count(1), outs
    for n in ("a", "b"):  # whichever was refused runs again now
        subprocess.run([*cmd, str(tmp_path / n / "m.csv"), *common], env=env, check=True, capture_output=True)
    store = FeatureStore.open(url, create=False)
    rows = store.sql("SELECT group_id, count(DISTINCT split) AS n FROM dataset_images GROUP BY 1").to_pylist()
    assert rows and all(r["n"] == 1 for r in rows)
    assert store.sql("SELECT count(*) FROM raw_tasks").column(0)[0].as_py() == 1


def test_a_shipped_split_that_leaks_a_patient_is_reported(tmp_path, store, capsys) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "m.csv").write_text("path,label,split,patient\n0.png,a,train,P1\n1.png,b,test,P1\n2.png,a,test,P2\n"
                                  "3.png,b,train,P3\n")  # fmt: skip
    opts = FormatOptions(label_columns=("label",), split_column="split", group_column="patient")
    summary = ingest(store, folder / "m.csv", "csv", "c", opts, QUIET)
    assert summary.groups_across_splits == {"P1": ["train", "test"]}
    args = ["ingest", str(folder / "m.csv"), "--layout", "csv", "-d", "c2", "--label-column", "label",
            "--split-column", "split", "--group-column", "patient", "-s", store.url]  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "1 patient group(s) are in more than one split" in out
    code, _, err = run_cli(capsys, *args, "--strict")
    assert code != 0 and "more than one split (--strict)" in err


def _take_stale_lock(url: str, barrier: object, holders: object) -> None:
    """One racer: at the barrier, take the dataset's lock (left by a dead process); count the holders."""
    import time

    store = FeatureStore.open(url, create=False)
    barrier.wait()  # type: ignore[attr-defined]
    try:
        with dataset_lock(store, "d"):
            with holders.get_lock():  # type: ignore[attr-defined]
                holders.value += 1  # type: ignore[attr-defined]
            time.sleep(0.5)  # hold it while the others try
    except DatasetBusyError:
        pass


def test_racing_takeovers_of_a_stale_lock_leave_one_holder(store: FeatureStore) -> None:
    import json
    import multiprocessing as mp
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    ctx = mp.get_context("spawn")
    area = store.file_area("locks")
    for _trial in range(3):
        stale = {"pid": int(dead), "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00"}
        area.write_atomic(f"ingest-{b'd'.hex()}.json", json.dumps(stale).encode())
        barrier, holders = ctx.Barrier(6), ctx.Value("i", 0)
        racers = [ctx.Process(target=_take_stale_lock, args=(store.url, barrier, holders)) for _ in range(6)]
        for p in racers:
            p.start()
        for p in racers:
            p.join(60)
        assert holders.value == 1
        assert area.read(f"ingest-{b'd'.hex()}.json") is None  # the one holder released it
        assert not [n for n, _ in area.entries() if n.endswith(".stale")]


def test_a_compaction_killed_while_holding_its_lock_does_not_block_the_next(store: FeatureStore) -> None:
    import json
    import socket

    from medprobe.featurestore import compact_table

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    lock = {"at": "2026-01-01T00:00:00+00:00", "pid": int(dead), "host": socket.gethostname()}
    store.file_area("locks").write_atomic("compact-failures.lock", json.dumps(lock).encode())
    report = compact_table(store, "failures", min_fragments=2)
    assert report.table == "failures"
    live = {"at": "2026-01-01T00:00:00+00:00", "pid": os.getpid(), "host": socket.gethostname()}
    store.file_area("locks").write_atomic("compact-failures.lock", json.dumps(live).encode())
    with pytest.raises(Exception, match="another compaction of failures holds"):
        compact_table(store, "failures", min_fragments=2)


def test_a_takeover_never_removes_a_lock_created_since_the_stale_one_was_read(store: FeatureStore) -> None:
    """The interleaving that gave two holders: B reads the stale lock, A takes it over, then B acts on what it read."""
    area = store.file_area("locks")
    area.write_atomic("x.lock", b"stale")
    seen_by_a = seen_by_b = area.read("x.lock")
    assert seen_by_a is not None and seen_by_b is not None
    assert area.take_over("x.lock", seen_by_a, b"A")
    assert not area.take_over("x.lock", seen_by_b, b"B")  # remove-then-create would delete A's live lock here
    assert area.read("x.lock") == b"A"
    assert not area.take_over("y.lock", b"gone", b"C")  # released meanwhile: nothing to take over
