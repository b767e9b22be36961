"""The whole flow on a real S3 HTTP endpoint (moto's server on 127.0.0.1, through s3fs): ingest --copy, extract,
sweep, sql, verify, gc; and two concurrent writers that lose and duplicate nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.cli import run_cli

pytest.importorskip("moto")
pytest.importorskip("s3fs")
BUCKET = "medprobe-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import boto3
    import fsspec

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    fsspec.get_filesystem_class("s3").clear_instance_cache()  # a fresh client for this endpoint
    try:
        yield f"s3://{BUCKET}/store-{port}"
    finally:
        fsspec.get_filesystem_class("s3").clear_instance_cache()
        server.stop()


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 8)):
        for cls in ("normal", "lesion"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n // 2):
                shade = 60 if cls == "normal" else 180
                arr = np.clip(rng.normal(shade, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{cls}{i}.png")
    return root


def test_the_whole_flow_on_s3(s3_url: str, tmp_path: Path, capsys) -> None:
    src = _folder(tmp_path / "src")
    code, out, err = run_cli(capsys, "ingest", str(src), "--layout", "imagefolder", "-d", "toy", "--copy",
                             "--no-progress", "-f", "json", "--store", s3_url)  # fmt: skip
    assert code == 0, err
    for png in src.rglob("*.png"):  # --copy: the store no longer needs the source files
        png.unlink()
    code, out, err = run_cli(capsys, "extract", "-d", "toy", "-m", "tiny-random/clip", "--no-progress", "-f", "json",
                             "--store", s3_url)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["images_committed"] == 24
    code, out, err = run_cli(capsys, "sweep", "-d", "toy", "-t", "label", "-m", "tiny-random/clip", "--cv", "2",
                             "--c-grid", "0.1,1", "--n-boot", "50", "-f", "json", "--store", s3_url)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["test"]["macro_auc"]["value"] > 0.5
    code, out, err = run_cli(capsys, "sql", "SELECT count(*) AS n FROM activations", "-f", "json", "--store", s3_url)
    assert code == 0, err
    assert json.loads(out)[0]["n"] == 24 * 2
    code, out, err = run_cli(capsys, "store", "compact", "--min-fragments", "2", "-f", "json", "--store", s3_url)
    assert code == 0, err
    assert {r["table"]: r["fragments_after"] for r in json.loads(out)["tables"]}["runs"] == 1
    code, out, err = run_cli(capsys, "sql", "SELECT count(*) AS n FROM activations", "-f", "json", "--store", s3_url)
    assert code == 0 and json.loads(out)[0]["n"] == 24 * 2  # the same answer from the compacted manifest
    for args in (["store", "verify", "--no-progress"], ["store", "gc"]):
        code, _, err = run_cli(capsys, *args, "--store", s3_url)
        assert code == 0, err


def test_two_concurrent_writers_on_s3_lose_and_duplicate_nothing(s3_url: str, tmp_path: Path, capsys) -> None:
    src = _folder(tmp_path / "src")
    code, _, err = run_cli(capsys, "ingest", str(src), "--layout", "imagefolder", "-d", "toy", "--copy",
                           "--no-progress", "--store", s3_url)  # fmt: skip
    assert code == 0, err
    cmd = [sys.executable, "-m", "medprobe.cli.main", "extract", "-d", "toy", "-m", "tiny-random/clip",
           "--commit-every", "4", "--batch-size", "2", "--no-progress", "--store", s3_url]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    code, out, err = run_cli(capsys, "sql", "SELECT count(*) AS n, count(DISTINCT image_hash) AS images FROM "
                             "activations", "-f", "json", "--store", s3_url)  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == [{"n": 48, "images": 24}]  # every row once: nothing lost, nothing shown twice
    code, out, err = run_cli(capsys, "store", "verify", "--no-progress", "-f", "json", "--store", s3_url)
    assert code == 0, err


def test_missing_credentials_name_the_bucket(s3_url: str, monkeypatch, tmp_path: Path, capsys) -> None:
    import fsspec

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    code, _, err = run_cli(capsys, "datasets", "--store", s3_url)
    assert code != 0 and f"bucket {BUCKET!r} are missing or refused" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- locks and freshness on S3
_RACE = """
import json, sys, time
from medprobe.featurestore.fsio import resolve
from medprobe.featurestore.exclusive import create_exclusive, take_over
url, path, mode, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
loc = resolve(url)
body = json.dumps({"me": sys.argv[5]}).encode()
while time.time() < start:
    time.sleep(0.001)
if mode == "create":
    won = create_exclusive(loc, loc.path(path), body)
else:
    won = take_over(loc, loc.path(path), b"stale", body)
print(json.dumps(won))
"""


def _race(s3_url: str, path: str, mode: str, n: int) -> list[bool]:
    import time

    start = time.time() + 4  # every process imported and connected: they start together
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, s3_url, path, mode, str(start), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]  # fmt: skip
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_locks_on_s3_are_exclusive_under_racing_processes(s3_url: str) -> None:
    """Conditional writes: of eight processes creating (or taking over) one lock at once, exactly one wins."""
    from medprobe.featurestore.fsio import resolve

    for trial in range(2):
        assert sum(_race(s3_url, f"locks/create-{trial}.json", "create", 8)) == 1
    loc = resolve(s3_url)
    for trial in range(2):
        loc.fs.pipe_file(loc.path(f"locks/stale-{trial}.json"), b"stale")  # a dead holder's lock
        assert sum(_race(s3_url, f"locks/stale-{trial}.json", "take", 8)) == 1


def test_an_endpoint_that_ignores_conditional_writes_is_refused(s3_url: str, monkeypatch, tmp_path, capsys) -> None:
    import s3fs

    real = s3fs.S3FileSystem._pipe_file

    async def ignores_conditions(self, path, data, *args, mode="overwrite", **kwargs):  # an old S3-compatible server
        kwargs.pop("IfMatch", None)
        return await real(self, path, data, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", ignores_conditions)
    src = _folder(tmp_path / "src")
    code, _, err = run_cli(capsys, "ingest", str(src), "--layout", "imagefolder", "-d", "toy", "--no-progress",
                           "--store", s3_url)  # fmt: skip
    assert code == 4 and "ignores conditional writes" in err and len(err.strip().splitlines()) == 1, err


def test_a_store_handle_on_s3_sees_other_writers(s3_url: str, tmp_path: Path, capsys) -> None:
    """s3fs's listing cache must not hide what another process wrote: not after refresh(), not in a new open, and
    not from a worker polling for jobs."""
    from medprobe.engines.jobs import JobQueue
    from medprobe.featurestore import FeatureStore

    src = _folder(tmp_path / "src")
    code, _, err = run_cli(capsys, "ingest", str(src / "train"), "--layout", "imagefolder", "-d", "a", "--copy",
                           "--no-progress", "--store", s3_url)  # fmt: skip
    assert code == 0, err
    store = FeatureStore.open(s3_url)
    queue = JobQueue(store)
    assert store.sql("SELECT count(DISTINCT dataset) FROM dataset_images").column(0)[0].as_py() == 1
    assert queue.job_ids() == []
    other = [sys.executable, "-m", "medprobe.cli.main", "--store", s3_url]
    for args in (["ingest", str(src / "test"), "--layout", "imagefolder", "-d", "b", "--copy", "--no-progress"],
                 ["submit", "-d", "a", "-m", "tiny-random/clip", "--shards", "2"]):  # fmt: skip
        done = subprocess.run(other + args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    store.refresh()
    assert store.sql("SELECT count(DISTINCT dataset) FROM dataset_images").column(0)[0].as_py() == 2
    assert FeatureStore.open(s3_url).sql("SELECT count(*) FROM datasets").column(0)[0].as_py() == 2
    assert len(queue.job_ids()) == 1
