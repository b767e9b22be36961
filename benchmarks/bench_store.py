"""Feature store benchmark: segment write/read against np.save/np.load, gathers, manifest lookups, codecs.

Run: ``python benchmarks/bench_store.py [--markdown] [--quick] [--dir DIR]``. Everything is measured in the same run on
the same machine, side by side with its baseline. Files go to a temporary folder on local disk; the page cache
cannot be dropped here, so reads are warm-cache for numpy and the store alike. Before each timed write the OS is
asked to flush dirty pages (``os.sync``) so that one write's writeback does not slow the next.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import zarr
from rich.console import Console
from rich.table import Table
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore

from medprobe.featurestore import FeatureStore
from medprobe.featurestore.ids import new_id
from medprobe.featurestore.segments import _crc32c, chunk_rows
from medprobe.schemas import FeatureSetRow


@dataclass
class Row:
    what: str
    medprobe: str
    baseline: str
    ratio: str
    target: str = ""
    met: str = ""


def timed(fn: Callable[[], object], repeats: int, *, sync: bool = False, setup: Callable[[], object] | None = None):
    """Median seconds of ``repeats`` calls (``setup`` runs untimed before each; ``sync`` flushes dirty pages first)."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        if sync:
            os.sync()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hashes_for(n: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def feature_set(fsid: str, n_layers: int, hidden: int) -> FeatureSetRow:
    return FeatureSetRow(
        feature_set_id=fsid,
        model_id="bench/synthetic",
        model_revision="0" * 40,
        adapter="bench",
        preprocessing="{}",
        prompt=None,
        pooling="mean",
        layer_semantics="synthetic",
        n_layers=n_layers,
        hidden_sizes=[hidden] * n_layers,
        compute_dtype="fp32",
        storage_dtype="float16",
    )


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / 1e6 / seconds


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


# --------------------------------------------------------------------------- write / read / gather
def bench_array(workdir: Path, n: int, hidden: int, repeats: int) -> list[Row]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, hidden), dtype=np.float32).astype(np.float16)
    hashes = hashes_for(n)
    nbytes = x.nbytes
    tag = f"{n:,} x {hidden:,} fp16 ({nbytes / 1e6:,.0f} MB)"
    npy = workdir / "x.npy"

    def np_save() -> None:
        with open(npy, "wb") as f:
            np.save(f, x)

    def np_save_fsync() -> None:
        with open(npy, "wb") as f:
            np.save(f, x)
            f.flush()
            os.fsync(f.fileno())

    stores: list[Path] = []

    def fresh_store() -> None:
        for old in stores:
            shutil.rmtree(old, ignore_errors=True)
        stores.clear()
        path = workdir / f"store-{new_id()}"
        stores.append(path)
        FeatureStore.open(str(path)).register_feature_set(feature_set("bench", 1, hidden))

    def commit() -> None:
        FeatureStore.open(str(stores[-1])).commit_segment("bench", hashes, {0: x})

    t_save = timed(np_save, repeats, sync=True)
    t_save_sync = timed(np_save_fsync, repeats, sync=True)
    t_commit = timed(commit, repeats, sync=True, setup=fresh_store)

    store = FeatureStore.open(str(stores[-1]))
    np.testing.assert_array_equal(store.read("bench", 0, hashes), x)  # also warms the page cache and the caches
    np.load(npy)
    cold = store._manifest_cache.clear  # the first read of a layer in a process: the manifest query included
    reps = repeats + 2
    t_load = timed(lambda: np.load(npy), reps)
    t_read_first = timed(lambda: store.read("bench", 0), reps, setup=cold)  # every row, image_hash order
    t_read = timed(lambda: store.read("bench", 0), reps)  # repeated: the located rows are cached
    t_commit_first = timed(lambda: store.read("bench", 0, hashes), reps, setup=cold)  # every row, commit order
    t_commit_order = timed(lambda: store.read("bench", 0, hashes), reps)
    pick = rng.choice(n, n // 10, replace=False)
    subset = [hashes[i] for i in pick]
    t_gather_first = timed(lambda: store.read("bench", 0, subset), reps, setup=cold)
    t_gather = timed(lambda: store.read("bench", 0, subset), reps)
    t_np_gather = timed(lambda: np.load(npy)[pick], reps)
    shutil.rmtree(stores[-1], ignore_errors=True)

    def read_row(label: str, t: float) -> Row:
        return Row(
            f"read {tag}: {label} vs np.load",
            f"{mbps(nbytes, t):,.0f} MB/s",
            f"{mbps(nbytes, t_load):,.0f} MB/s",
            f"{t_load / t:.2f}",
            ">= 0.40",
            verdict(t_load / t >= 0.4),
        )

    w_ratio = t_save / t_commit
    return [
        Row(
            f"write {tag}: commit_segment (data fsynced, then manifest) vs np.save (no fsync)",
            f"{mbps(nbytes, t_commit):,.0f} MB/s",
            f"{mbps(nbytes, t_save):,.0f} MB/s",
            f"{w_ratio:.2f}",
            ">= 0.60",
            verdict(w_ratio >= 0.6),
        ),
        Row(
            f"write {tag}: commit_segment vs np.save + fsync (same durability)",
            f"{mbps(nbytes, t_commit):,.0f} MB/s",
            f"{mbps(nbytes, t_save_sync):,.0f} MB/s",
            f"{t_save_sync / t_commit:.2f}",
            ">= 0.60",
            verdict(t_save_sync / t_commit >= 0.6),
        ),
        read_row("read(fs, layer), first read (manifest query + data)", t_read_first),
        read_row("read(fs, layer), repeated (located rows cached)", t_read),
        read_row("read(fs, layer, hashes in commit order), first read", t_commit_first),
        read_row("read(fs, layer, hashes in commit order), repeated", t_commit_order),
        Row(
            f"gather 10 % random rows of {tag} vs the full read(fs, layer), first reads",
            f"{t_gather_first * 1e3:,.0f} ms",
            f"{t_read_first * 1e3:,.0f} ms",
            f"{t_gather_first / t_read_first:.2f}",
            "<= 2",
            verdict(t_gather_first / t_read_first <= 2),
        ),
        Row(
            f"gather 10 % random rows of {tag} vs the full read(fs, layer), repeated",
            f"{t_gather * 1e3:,.0f} ms",
            f"{t_read * 1e3:,.0f} ms",
            f"{t_gather / t_read:.2f}",
            "<= 2",
            verdict(t_gather / t_read <= 2),
        ),
        Row(
            f"gather 10 % random rows of {tag}: store (repeated) vs np.load + fancy index",
            f"{t_gather * 1e3:,.0f} ms",
            f"{t_np_gather * 1e3:,.0f} ms",
            f"{t_np_gather / t_gather:.2f}",
        ),
    ]


# --------------------------------------------------------------------------- codecs
def bench_codecs(workdir: Path, n: int, hidden: int, repeats: int) -> list[Row]:
    """zarr's own pipeline with the store's chunking: no codec, crc32c (the store's), zstd-1 + crc32c."""
    x = np.random.default_rng(1).standard_normal((n, hidden), dtype=np.float32).astype(np.float16)
    rows = chunk_rows(n, hidden, 2)
    variants = {"none": [], "crc32c": [Crc32cCodec()], "zstd-1 + crc32c": [ZstdCodec(level=1), Crc32cCodec()]}
    results: dict[str, tuple[float, float, float]] = {}
    for name, compressors in variants.items():
        path = workdir / f"codec-{name.replace(' ', '')}"

        def write(path: Path = path, compressors: list = compressors) -> None:
            shutil.rmtree(path, ignore_errors=True)
            group = zarr.open_group(LocalStore(path), mode="w-", zarr_format=3)
            arr = group.create_array(
                "x",
                shape=x.shape,
                chunks=(rows, hidden),
                dtype="float16",
                serializer=BytesCodec(),
                compressors=compressors,
                fill_value=0,
                config={"write_empty_chunks": True},
            )
            arr[...] = x

        t_write = timed(write, repeats, sync=True)
        arr = zarr.open_group(LocalStore(path, read_only=True), mode="r")["x"]
        arr[...]
        t_read = timed(lambda arr=arr: arr[...], repeats + 2)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "zarr.json")
        results[name] = (t_write, t_read, x.nbytes / size)
        shutil.rmtree(path, ignore_errors=True)
    base_w, base_r, _ = results["none"]
    out = []
    for name, (t_write, t_read, ratio) in results.items():
        out.append(
            Row(
                f"zarr codecs, {n:,} x {hidden} fp16: {name} (compression {ratio:.3f}x)",
                f"w {mbps(x.nbytes, t_write):,.0f} / r {mbps(x.nbytes, t_read):,.0f} MB/s",
                f"w {mbps(x.nbytes, base_w):,.0f} / r {mbps(x.nbytes, base_r):,.0f} MB/s (none)",
                f"w {base_w / t_write:.2f} / r {base_r / t_read:.2f}",
            )
        )
    ro = x.reshape(-1).view(np.uint8)
    t_crc = timed(lambda: _crc32c(ro), repeats + 2)
    out.append(
        Row(
            "crc32c checksum alone (google-crc32c), same array",
            f"{mbps(x.nbytes, t_crc):,.0f} MB/s",
            "",
            "",
        )
    )
    return out


# --------------------------------------------------------------------------- manifest lookup
def bench_manifest(workdir: Path, repeats: int, quick: bool) -> list[Row]:
    """A 2,000,000-row manifest (4 feature sets x 10 layers x 50,000 images, 1,000 images per segment)."""
    n_images, n_fs, n_layers, per_segment = (5_000, 4, 10, 100) if quick else (50_000, 4, 10, 1_000)
    store = FeatureStore.open(str(workdir / "manifest-store"))
    hashes = np.asarray(hashes_for(n_images, "m"))
    rng = np.random.default_rng(2)
    splits = rng.choice(["train", "val", "test"], n_images, p=[0.7, 0.1, 0.2])
    store.append(
        "dataset_images",
        pa.table(
            {
                "dataset": ["bench"] * n_images,
                "image_hash": hashes,
                "split": splits,
                "group_id": [None] * n_images,
                "source_path": [f"{i}.png" for i in range(n_images)],
                "labels": ["{}"] * n_images,
                "ingested_at": pa.array([0] * n_images, pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    layer_col = np.repeat(np.arange(n_layers, dtype=np.int32), per_segment)
    row_col = np.tile(np.arange(per_segment, dtype=np.int32), n_layers)
    for f in range(n_fs):
        store.register_feature_set(feature_set(f"fs{f}", n_layers, 8))
        for start in range(0, n_images, per_segment):
            segment = new_id("seg")
            store.append(
                "activations",
                pa.table(
                    {
                        "feature_set_id": [f"fs{f}"] * (per_segment * n_layers),
                        "layer": layer_col,
                        "image_hash": np.tile(hashes[start : start + per_segment], n_layers),
                        "segment_id": [segment] * (per_segment * n_layers),
                        "row": row_col,
                    }
                ),
            )
    total = store.sql("SELECT count(*) FROM raw_activations")[0][0].as_py()
    selection = "SELECT image_hash FROM dataset_images WHERE dataset = 'bench' AND split = 'test'"

    def locate() -> int:
        store._manifest_cache.clear()  # no cached located rows: the manifest query runs every time
        wanted = store.sql(selection).column("image_hash")
        return store.locate("fs2", [7], wanted)[7].num_rows

    join = (
        "SELECT a.image_hash, a.segment_id, a.row FROM dataset_images d JOIN activations a USING (image_hash) "
        "WHERE d.dataset = 'bench' AND d.split = 'test' AND a.feature_set_id = 'fs2' AND a.layer = 7"
    )
    n_found = locate()
    assert n_found == int((splits == "test").sum()) == store.sql(join).num_rows
    t_locate = timed(locate, repeats + 4)
    t_join = timed(lambda: store.sql(join), repeats + 4)
    frags = store.sql(
        "SELECT count(DISTINCT filename) FROM read_parquet(?, filename = true)",
        [[f for f in store.catalog.fragment_files("activations")]],
    )[0][0].as_py()
    label = f"manifest {total:,} rows in {frags} fragments: rows of one split ({n_found:,}) for one feature set + layer"
    return [
        Row(
            f"{label}: store.read's locate step (selection SQL + locate)",
            f"{t_locate * 1e3:,.0f} ms",
            "",
            "",
            "<= 200 ms",
            verdict(t_locate <= 0.2),
        ),
        Row(
            f"{label}: the same as one SQL join", f"{t_join * 1e3:,.0f} ms", "", "", "<= 200 ms", verdict(t_join <= 0.2)
        ),
    ]


# --------------------------------------------------------------------------- report
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="Also print a README-ready markdown table.")
    parser.add_argument("--quick", action="store_true", help="Small arrays and manifest (a smoke test of the script).")
    parser.add_argument("--dir", default=None, help="Folder for temporary files (default: the system temp dir).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed repetitions (the median is reported).")
    args = parser.parse_args()
    shapes = [(10_000, 768), (2_000, 4_096)] if args.quick else [(100_000, 768), (20_000, 4_096)]
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="medprobe-bench-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        for n, hidden in shapes:
            rows += bench_array(workdir, n, hidden, args.repeats)
        rows += bench_codecs(workdir, *shapes[0], args.repeats)
        rows += bench_manifest(workdir, args.repeats, args.quick)
    load_after = os.getloadavg()[0]
    title = f"medprobe store benchmark: {machine()}; load average {load_before:.1f} -> {load_after:.1f}"
    table = Table(title=title, show_lines=False)
    for col in ("measurement", "medprobe", "baseline", "ratio", "target", "met"):
        table.add_column(col, justify="left" if col == "measurement" else "right", overflow="fold")
    for r in rows:
        table.add_row(r.what, r.medprobe, r.baseline, r.ratio, r.target, r.met)
    console = Console(width=200)
    console.print(table)
    if args.markdown:
        print(f"\nMeasured on {machine()} (load average {load_before:.1f} -> {load_after:.1f}).\n")
        print("| measurement | medprobe | baseline | ratio | target | met |")
        print("|---|---:|---:|---:|---:|:---:|")
        for r in rows:
            print(f"| {r.what} | {r.medprobe} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |")


if __name__ == "__main__":
    main()
