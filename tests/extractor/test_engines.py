"""Extraction on Ray and on SLURM (submitit's local executor) equals the local engine; faults and reruns are safe."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medprobe.engines.distributors import InProcess, Ray, Slurm, distribute
from medprobe.errors import InvalidInputError, MedprobeError
from medprobe.extractor.pipeline import ExtractOptions, extract
from medprobe.featurestore import FeatureStore
from tests.helpers.datasets import make_dataset
from tests.helpers.faults import DieOnceAfterCommit

MODEL = "tiny-random/clip"


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail instead of hanging when a cluster never answers."""

    def expired(*_: object) -> None:
        raise TimeoutError("engine test exceeded 240 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(240)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _options(**kw: object) -> ExtractOptions:
    base = {"dataset": "toy", "model": MODEL, "workers": 0, "batch_size": 1, "commit_every": 3,
            "storage_dtype": "float32"}
    return ExtractOptions.model_validate({**base, **kw})


def _store(tmp_path: Path, name: str) -> FeatureStore:
    store = FeatureStore.open(str(tmp_path / name), create=True)
    make_dataset(store, "toy", tmp_path / "img", 20)  # the same image files for every store
    return store


def _rows(store: FeatureStore) -> dict[tuple[str, int], np.ndarray]:
    store.refresh()
    out = {}
    for fs in store.table("feature_sets").column("feature_set_id").to_pylist():
        for layer in store.layers(fs):
            hashes = sorted(store.sql("SELECT image_hash FROM activations WHERE feature_set_id = ? AND layer = ?",
                                      [fs, layer]).column(0).to_pylist())  # fmt: skip
            out[(fs, layer)] = (hashes, store.read(fs, layer, hashes))
    return out


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == b[key][0], key
        assert a[key][1].tobytes() == b[key][1].tobytes(), key


def _raw_duplicates(store: FeatureStore) -> int:
    return store.sql("SELECT count(*) - count(DISTINCT (feature_set_id, layer, image_hash)) FROM raw_activations"
                     ).column(0)[0].as_py()  # fmt: skip


@pytest.fixture
def local_rows(tmp_path: Path) -> dict:
    store = _store(tmp_path, "local")
    extract(store, _options(), show_progress=False)
    return _rows(store)


def test_ray_engine_equals_local_survives_a_killed_actor_and_reruns_nothing(tmp_path, local_rows, deadline,
                                                                            capfd) -> None:  # fmt: skip
    ray = pytest.importorskip("ray")
    store = _store(tmp_path, "ray")
    marker = tmp_path / "fault-marker"
    root = str(Path(__file__).resolve().parents[2])  # the actors import the fault hook from tests.helpers
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}})  # fmt: skip
    capfd.readouterr()
    try:
        with pytest.raises(InvalidInputError, match="the Ray cluster has 0 GPUs"):
            distribute(store, _options(), Ray(gpus_per_worker=1), n_shards=4)
        pool = Ray(workers=2, max_retries=2, fault=DieOnceAfterCommit(str(marker)))
        summary = distribute(store, _options(), pool, n_shards=4)
        assert marker.exists()  # an actor died after its first commit and its shard was retried
        assert summary["shards_pending"] == 4 and summary["images_committed"] == 20 - 3
        assert _raw_duplicates(store) == 0
        assert capfd.readouterr().out == ""  # a dead actor's messages never reach stdout (-f json stays parseable)
        _same(_rows(store), local_rows)
        again = distribute(store, _options(), Ray(workers=2), n_shards=4)
        assert again["shards_pending"] == 0 and again["images_committed"] == 0
    finally:
        ray.shutdown()


def test_slurm_engine_with_submitits_local_executor(tmp_path, local_rows, deadline) -> None:
    pytest.importorskip("submitit")
    store = _store(tmp_path, "slurm")
    import shutil

    logs = str(tmp_path / "logs")
    if shutil.which("sbatch") is None:
        with pytest.raises(InvalidInputError, match="needs SLURM's sbatch"):
            distribute(store, _options(), Slurm(log_dir=logs), n_shards=3)
    summary = distribute(store, _options(), Slurm(log_dir=logs, cluster="local"), n_shards=3)
    assert summary["shards_pending"] == 3 and summary["images_committed"] == 20
    _same(_rows(store), local_rows)
    assert any((tmp_path / "logs").iterdir())  # submitit's logs beside the run
    again = distribute(store, _options(), Slurm(log_dir=logs, cluster="local"), n_shards=3)
    assert again["shards_pending"] == 0


def test_in_process_shards_equal_the_local_engine_and_a_fault_hook_stops_one(tmp_path, local_rows) -> None:
    store = _store(tmp_path, "inprocess")
    runner_fault = InProcess(store=store)
    runner_fault.runner.fault = _RaiseOnce()
    with pytest.raises(MedprobeError, match="injected fault"):  # the writer names what stopped it
        distribute(store, _options(), runner_fault, n_shards=3)
    summary = distribute(store, _options(), InProcess(store=store), n_shards=3)  # reruns only what is missing
    assert summary["engine"] == "local" and 0 < summary["shards_pending"] <= 3
    assert summary["images_committed"] < 20 and _raw_duplicates(store) == 0
    _same(_rows(store), local_rows)
    assert distribute(store, _options(), InProcess(store=store), n_shards=3)["shards_pending"] == 0


class _RaiseOnce:
    """A fault hook: the first commit of this process raises (the shard stops with what it committed)."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, n: int) -> None:
        if not self.fired:
            self.fired = True
            raise RuntimeError("injected fault after the first commit")


def test_engines_need_a_shared_store(tmp_path: Path) -> None:
    store = FeatureStore.open("memory://engines-shared", create=True)
    make_dataset(store, "toy", tmp_path / "img", 4)
    with pytest.raises(InvalidInputError, match="not an in-memory store"):
        distribute(store, _options(), Slurm(log_dir=str(tmp_path), cluster="local"), n_shards=2)


def test_extract_cli_on_the_slurm_engine_and_status(tmp_path: Path, capsys, deadline) -> None:
    import json

    from tests.helpers.cli import run_cli

    store = _store(tmp_path, "cli")
    args = ["extract", "-d", "toy", "-m", MODEL, "--engine", "slurm", "--slurm-cluster", "local", "--shards", "2",
            "-f", "json", "--store", store.url, "--decode-workers", "0"]  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["engine"] == "slurm" and doc["images_committed"] == 20 and (tmp_path / "cli" / "slurm-logs").is_dir()
    code, out, err = run_cli(capsys, "status", "-f", "json", "--store", store.url)
    assert code == 0, err
    engines_seen = {r["engine"] for r in json.loads(out)["runs"]}
    assert {"slurm shard 0/2", "slurm shard 1/2", "slurm"} <= engines_seen  # the shard runs and the driver's run
    code, _, err = run_cli(capsys, "extract", "-d", "toy", "-m", MODEL, "--workers", "2", "--store", store.url)
    assert code != 0 and "--workers sizes a ray pool" in err


def test_an_unreachable_ray_address_fails_fast(tmp_path: Path) -> None:
    import time

    pytest.importorskip("ray")
    store = _store(tmp_path, "unreachable")
    start = time.monotonic()
    with pytest.raises(InvalidInputError, match="no Ray cluster answers there"):
        distribute(store, _options(), Ray(address="127.0.0.1:1"), n_shards=2)
    assert time.monotonic() - start < 15
    with pytest.raises(InvalidInputError, match="give local, auto or HOST:PORT"):
        distribute(store, _options(), Ray(address="nonsense"), n_shards=2)


def test_missing_engine_packages_say_what_to_install(tmp_path: Path, monkeypatch) -> None:
    import sys

    store = _store(tmp_path, "nopkg")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(InvalidInputError, match=r"pip install 'medprobe\[ray\]'"):
        distribute(store, _options(), Ray(), n_shards=2)
    with pytest.raises(InvalidInputError, match=r"pip install 'medprobe\[slurm\]'"):
        distribute(store, _options(), Slurm(log_dir=str(tmp_path)), n_shards=2)


def test_what_ray_writes_to_stdout_goes_to_stderr() -> None:
    code = ("import os, sys\nfrom medprobe.engines.distributors import stdout_to_stderr\nwith stdout_to_stderr():\n"
            "    print('python'); os.write(1, b'descriptor\\n'); os.system('echo child')\nprint('after')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "after\n" and all(w in done.stderr for w in ("python", "descriptor", "child"))
