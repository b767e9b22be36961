"""Benchmark: ``medprobe ingest`` of N image files against ``sha256sum`` over the same files, same run.

Generates N distinct PNG files of about ``--size-kb`` KB (random grayscale pixels, made unique by a text
chunk) in a temporary folder, then times

- ``sha256sum`` over all files (one process, the usual baseline) and with ``xargs -P <cores>``;
- a full ingest (csv manifest -> parse, parallel sha256 + PNG structure check, store writes) into a fresh
  local store, in a child process so its peak RSS is its own; at two sizes (N and N/5) to show that memory
  stays flat in the number of files.

Usage: ``python benchmarks/bench_ingest.py [--files 10000] [--size-kb 150] [--workers N]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table


def _chunk(cid: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + cid + payload + struct.pack(">I", zlib.crc32(cid + payload))


def generate(folder: Path, n: int, size_kb: int, seed: int = 0) -> tuple[Path, int]:
    """N distinct PNGs of ~size_kb KB and a manifest ``path,label``; returns (manifest, total bytes)."""
    side = int((size_kb * 1024) ** 0.5)
    rng = np.random.default_rng(seed)
    bases = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(buf, format="PNG")
        bases.append(buf.getvalue())
    total = 0
    lines = ["path,label"]
    for i in range(n):
        base = bases[i % len(bases)]
        data = base[:-12] + _chunk(b"tEXt", b"index\x00" + str(i).encode()) + base[-12:]
        name = f"{i // 1000:03d}/img{i:06d}.png"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        total += len(data)
        lines.append(f"{name},{'ab'[i % 2]}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, total


def subset_manifest(manifest: Path, n: int) -> Path:
    lines = manifest.read_text().splitlines()
    out = manifest.with_name(f"manifest_{n}.csv")
    out.write_text("\n".join(lines[: n + 1]) + "\n")
    return out


def time_sha256sum(folder: Path, parallel: int) -> float:
    cmd = f"find {folder} -name '*.png' -print0 | xargs -0 -n 100 -P {parallel} sha256sum > /dev/null"
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True)
    return time.perf_counter() - t0


def child(manifest: str, store_dir: str, workers: int | None) -> None:
    """Run one ingest and print JSON with its timings and this process's peak RSS."""
    from medprobe.featurestore import FeatureStore
    from medprobe.ingestion.pipeline import IngestOptions, ingest
    from medprobe.ingestion.records import FormatOptions

    store = FeatureStore.open(store_dir)
    t0 = time.perf_counter()
    summary = ingest(
        store,
        manifest,
        "csv",
        "bench",
        FormatOptions(label_columns=("label",)),
        IngestOptions(show_progress=False, workers=workers),
    )
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "files": summary.records,
                "failures": summary.failures,
                "bytes": summary.bytes_read,
                "wall": wall,
                "hash_seconds": summary.hash_seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run_child(manifest: Path, store_dir: Path, workers: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(manifest), "--store", str(store_dir)]
    if workers:
        cmd += ["--workers", str(workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--size-kb", type=int, default=150)
    ap.add_argument("--workers", type=int, default=None, help="ingest hashing threads [default: CPU count]")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the best is shown")
    ap.add_argument("--dir", default=None, help="where to generate files [default: a temporary folder]")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.store, args.workers)
        return

    console = Console()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.dir))
    try:
        console.print(f"generating {args.files:,} PNG files of ~{args.size_kb} KB in {work} ...")
        manifest, total = generate(work / "files", args.files, args.size_kb)
        subprocess.run(f"cat $(find {work}/files -name '*.png') > /dev/null", shell=True, check=True)  # warm cache
        small_n = max(1, args.files // 5)
        small = subset_manifest(manifest, small_n)
        small_bytes = sum(
            (work / "files" / line.split(",")[0]).stat().st_size for line in small.read_text().splitlines()[1:]
        )

        # alternate baseline and ingest, keep the best of --repeats runs of each (the machine may be shared)
        t_sum1 = t_sumn = float("inf")
        big = little = None
        for rep in range(args.repeats):
            t_sum1 = min(t_sum1, time_sha256sum(work / "files", 1))
            t_sumn = min(t_sumn, time_sha256sum(work / "files", cores))
            b = run_child(manifest, work / f"store-big-{rep}", args.workers)
            s = run_child(small, work / f"store-small-{rep}", args.workers)
            assert b["failures"] == 0 and s["failures"] == 0
            big = b if big is None or b["wall"] < big["wall"] else big
            little = s if little is None or s["wall"] < little["wall"] else little
        assert big is not None and little is not None

        base = total / 1e6 / t_sum1
        table = Table(title=f"ingest vs sha256sum: {args.files:,} PNG files, {total / 1e6:,.0f} MB, {cores} cores")
        for col in ("what", "files", "seconds", "files/s", "MB/s", "ratio vs sha256sum", "peak RSS MB"):
            table.add_column(col, justify="left" if col == "what" else "right")

        def row(what: str, n: int, nbytes: int, secs: float, rss: float | None = None) -> None:
            mbs = nbytes / 1e6 / secs
            table.add_row(what, f"{n:,}", f"{secs:.2f}", f"{n / secs:,.0f}", f"{mbs:,.1f}", f"{mbs / base:.2f}",
                          "" if rss is None else f"{rss:,.0f}")  # fmt: skip

        row("sha256sum (1 process)", args.files, total, t_sum1)
        row(f"sha256sum (xargs -P {cores})", args.files, total, t_sumn)
        row("medprobe ingest: hash + check phase", args.files, big["bytes"], big["hash_seconds"])
        row("medprobe ingest: whole run", args.files, big["bytes"], big["wall"], big["peak_rss_mb"])
        row(
            f"medprobe ingest: whole run, {small_n:,} files",
            small_n,
            small_bytes,
            little["wall"],
            little["peak_rss_mb"],
        )
        console.print(table)
        console.print(
            f"peak RSS {little['peak_rss_mb']:,.0f} MB at {small_n:,} files vs {big['peak_rss_mb']:,.0f} MB at "
            f"{args.files:,} files; target: whole-run MB/s >= 0.80 x sha256sum (1 process)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
