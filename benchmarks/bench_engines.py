"""The same extraction on the local engine and on Ray with 1 and 2 actors, side by side (CPU, a tiny model).

Each engine extracts the same generated PNGs into its own fresh store. Reported: Ray's start-up (``ray.init`` of a
local cluster), the wall time of the extraction itself (actors start and load the model inside it), images per second
and the ratio to the local engine, and the steady state (Ray: the wall-clock rate over the shards after each actor's
first one; local: the extraction loop's rate once the model is loaded). On a GPU machine pass ``--model`` and
``--gpus-per-worker 1`` for one actor per GPU.

    python benchmarks/bench_engines.py --images 400
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table


def _dataset(store, folder: Path, n: int) -> None:
    import hashlib

    from medprobe.schemas import DatasetImageRow, DatasetRow, ImageRow

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, members = [], []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        data = path.read_bytes()
        h = hashlib.sha256(data).hexdigest()
        images.append(ImageRow(image_hash=h, uri=str(path), width=64, height=64, mode="RGB", bit_depth=8,
                               format="PNG", n_bytes=len(data)))  # fmt: skip
        members.append(DatasetImageRow(dataset="bench", image_hash=h, split="train", source_path=path.name,
                                       labels="{}"))  # fmt: skip
    store.append("images", images)
    store.append("dataset_images", members)
    store.append("datasets", [DatasetRow(dataset="bench", format="bench", source="generated", split_policy="shipped")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--model", default="tiny-random/clip")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import ray

    from medprobe.engines import shards as engines
    from medprobe.extractor.pipeline import ExtractOptions, extract
    from medprobe.featurestore import FeatureStore

    root = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    options = ExtractOptions.model_validate({"dataset": "bench", "model": args.model, "workers": 0})
    rows = []

    store = FeatureStore.open(str(root / "local"), create=True)
    _dataset(store, root / "img", args.images)
    t = time.perf_counter()
    local = extract(store, options, show_progress=False)
    local_s = time.perf_counter() - t
    rows.append({"engine": "local", "workers": 1, "startup_s": 0.0, "extract_s": local_s,
                 "steady_images_per_s": args.images / local["seconds"]})  # fmt: skip

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - t
    try:
        for workers in (1, 2):
            store = FeatureStore.open(str(root / f"ray{workers}"), create=True)
            _dataset(store, root / "img", args.images)
            done: list[tuple[float, int]] = []

            def record(result: dict, done: list[tuple[float, int]] = done) -> None:
                done.append((time.perf_counter(), result["images_committed"]))

            t = time.perf_counter()
            summary = engines.run_ray(store, options, n_shards=args.shards, workers=workers,
                                      cpus_per_worker=2 / workers, gpus_per_worker=args.gpus_per_worker,
                                      on_shard=record)  # fmt: skip
            assert summary["images_committed"] == args.images
            # steady state: the shards after each actor's first (which also loads the model)
            later = done[workers:]
            steady = sum(n for _, n in later) / (done[-1][0] - done[workers - 1][0]) if later else float("nan")
            rows.append({"engine": "ray", "workers": workers, "startup_s": startup, "extract_s":
                         time.perf_counter() - t, "steady_images_per_s": steady})  # fmt: skip
    finally:
        ray.shutdown()
    for r in rows:
        r["images_per_s"] = args.images / r["extract_s"]
        r["vs_local"] = local_s / r["extract_s"]
    if args.json:
        print(json.dumps({"images": args.images, "model": args.model, "rows": rows}))
        return
    table = Table(title=f"extraction engines: {args.images} images, {args.model}, {args.shards} shards")
    for col in ("engine", "workers", "start-up s", "extract s", "images/s", "vs local", "steady images/s",
                "steady vs local"):
        table.add_column(col)
    local_rate = rows[0]["steady_images_per_s"]
    for r in rows:
        table.add_row(r["engine"], str(r["workers"]), f"{r['startup_s']:.1f}", f"{r['extract_s']:.1f}",
                      f"{r['images_per_s']:.1f}", f"{r['vs_local']:.2f}x", f"{r['steady_images_per_s']:.1f}",
                      f"{r['steady_images_per_s'] / local_rate:.2f}x")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
