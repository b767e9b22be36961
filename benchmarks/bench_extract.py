"""Reference study's extraction method vs medprobe's extractor, side by side, image files -> committed store rows.

Reference method (as in the study): one image at a time, the image decoded and preprocessed twice, a forward
pass with ``output_hidden_states=True`` (plugins: hooks keeping every block's full feature map), every hidden
state of every layer copied to host, pooled there (mean over tokens / positions), committed every 256 images.
medprobe: ``medprobe.extractor.pipeline.extract`` (DataLoader workers, batched pooled forward, async committer).

Each (model, method) runs in its own process so peak host RSS (process + its DataLoader workers) is its own.
On CUDA the default models are full-size random-weight configs (CLIP ViT-B/32 vision tower, Idefics-9B);
on CPU the tiny random models and EfficientNet-Lite0.

    python benchmarks/bench_extract.py                       # defaults for the machine
    python benchmarks/bench_extract.py --images 300 --models efficientnet-lite0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KNEE = ROOT / ".." / "shared" / "data" / "knee-oa-kl"
CPU_MODELS = ["tiny-random/clip", "tiny-random/idefics", "efficientnet-lite0"]
GPU_MODELS = ["random-full/clip", "random-full/idefics"]
PROMPT_PRESET = "radiology-knee"


# --------------------------------------------------------------------------- setup (not timed)
def write_images(folder: Path, n: int) -> list[Path]:
    """``n`` JPEG files: the shared knee radiographs re-encoded, or seeded noise when they are absent."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources: list[Path] = []
    if (KNEE / "labels.csv").exists():
        with open(KNEE / "labels.csv", newline="") as f:
            sources = [KNEE / r["path"] for r in csv.DictReader(f)]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i < len(sources):
            img = Image.open(sources[i]).convert("RGB")
        else:
            img = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
        path = folder / f"img{i:06d}.jpg"
        img.save(path, quality=95)
        out.append(path)
    return out


def ingest(store, paths: list[Path]) -> None:
    import hashlib

    from medprobe.schemas import DatasetImageRow, ImageRow

    images, members = [], []
    for p in paths:
        data = p.read_bytes()
        h = hashlib.sha256(data).hexdigest()
        images.append(ImageRow(image_hash=h, uri=str(p), width=224, height=224, mode="RGB", bit_depth=8,
                               format="JPEG", n_bytes=len(data)))  # fmt: skip
        members.append(DatasetImageRow(dataset="bench", image_hash=h, split="train", source_path=p.name, labels="{}"))
    store.append("images", images)
    store.append("dataset_images", members)


# --------------------------------------------------------------------------- the two methods
def reference(store, adapter, paths: list[Path], prompt: str | None, dtype: str) -> int:
    """The study's loop; returns the number of images committed."""
    import torch

    from medprobe.extractor.feature_set import feature_set_row
    from medprobe.imaging import load_image

    ident = adapter.identity
    row = feature_set_row(ident, prompt=prompt, pooling="reference_mean", compute_dtype=dtype, storage_dtype="float16")
    store.register_feature_set(row)
    model = adapter.model
    from medprobe.adapters.models.image_encoder import BlockEncoderAdapter, block_output

    hooked: list[torch.Tensor] = []
    handles = []
    encoder = isinstance(adapter, BlockEncoderAdapter)  # timm / open_clip: every block's full output, then the head
    if encoder:
        for module in adapter.blocks:
            handles.append(module.register_forward_hook(lambda _m, _i, o: hooked.append(block_output(o))))
    elif not hasattr(model, "config"):  # a plain torch encoder (EfficientNet-Lite0): keep every block's full map
        for module in [*model._blocks, model._bn1]:
            handles.append(module.register_forward_hook(lambda _m, _i, o: hooked.append(o)))
    buf_h, buf = [], {i: [] for i in range(ident.n_layers)}
    done = 0

    def commit() -> None:
        nonlocal done
        store.commit_segment(row.feature_set_id, buf_h, {i: np.stack(v) for i, v in buf.items()})
        done += len(buf_h)
        buf_h.clear()
        for v in buf.values():
            v.clear()

    with torch.inference_mode():
        for p in paths:
            adapter.preprocess([load_image(str(p))], prompt)  # the study processed every image twice
            inputs = adapter.preprocess([load_image(str(p))], prompt)
            inputs = {k: v.to(adapter.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            if encoder:
                hooked.clear()
                embedding = adapter.embed(inputs["pixel_values"].to(adapter.dtype))
                states = [h.float().cpu() for h in [*hooked, embedding]]  # every layer, full output, to host
                means = {2: (), 3: (1,), 4: (1, 2) if adapter.layout.channels_last else (2, 3)}  # tokens / NCHW maps
                pooled = [(s.mean(dim=means[s.ndim]) if s.ndim > 2 else s)[0].numpy() for s in states]
            elif hooked is not None and handles:
                hooked.clear()
                model(inputs["pixel_values"].to(next(model.parameters()).dtype))
                states = [h.float().cpu() for h in hooked]  # every layer, full map, to host
                pooled = [s.mean(dim=(2, 3))[0].numpy() for s in states]
            else:
                out = model(**inputs, output_hidden_states=True)
                states = [h.float().cpu() for h in out.hidden_states]  # every layer, every token, to host
                pooled = [s.mean(dim=1)[0].numpy() for s in states[1 : ident.n_layers + 1]]
            import hashlib

            buf_h.append(hashlib.sha256(p.read_bytes()).hexdigest())
            for i in range(ident.n_layers):
                buf[i].append(pooled[i])
            if len(buf_h) >= 256:
                commit()
    if buf_h:
        commit()
    for h in handles:
        h.remove()
    return done


def child(model: str, method: str, n: int, workdir: Path, batch_size: str, workers: int, decode: str) -> dict:
    import torch

    from medprobe.adapters.loading import load_adapter
    from medprobe.extractor.pipeline import ExtractOptions, extract
    from medprobe.featurestore import FeatureStore

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bf16" if device == "cuda" else "fp32"
    paths = sorted((workdir / "images").glob("*.jpg"))[:n]
    store = FeatureStore.open(str(workdir / f"store-{method}-{model.replace('/', '_')}"))
    ingest(store, paths)
    adapter = load_adapter(model, device=device, dtype=dtype)
    prompt_opts = {"prompt_preset": PROMPT_PRESET} if adapter.identity.takes_prompt else {}
    t0 = time.perf_counter()
    if method == "reference":
        from medprobe.adapters.prompts import resolve_prompt

        prompt = resolve_prompt(preset=PROMPT_PRESET) if adapter.identity.takes_prompt else None
        done = reference(store, adapter, paths, prompt, dtype)
    else:
        opts = ExtractOptions(dataset="bench", model=model, batch_size=batch_size, workers=workers, dtype=dtype,
                              device=device, commit_every=1024, decode="pil" if method == "medprobe-pil" else decode,
                              **prompt_opts)  # fmt: skip
        summary = extract(store, opts, adapter=adapter, show_progress=False)
        done = summary["images_committed"]
    seconds = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {"images": done, "seconds": seconds, "images_per_s": done / seconds, "peak_rss_mb": rss_kb / 1024}
    if method != "reference":
        out |= {"decode": summary["decode"], "stage_seconds": summary["stage_seconds"]}
    return out


# --------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--images", type=int, default=None, help="default: 300 on CPU, 5,000 on CUDA")
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--reference-images", type=int, default=None, help="cap the slow batch-1 method")
    ap.add_argument("--json", help="also write one row per model to this JSON file (gpu_check.sh)")
    ap.add_argument("--decode", choices=["auto", "pil", "torchvision"], default="auto", help="medprobe's --decode")
    ap.add_argument("--compare-decode", action="store_true",
                    help="also run medprobe with --decode pil (default on CUDA: nvJPEG against CPU decoding)")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    from medprobe.extractor.pipeline import default_workers

    workers = args.workers if args.workers is not None else default_workers(os.cpu_count() or 1)
    if args.child:
        print(json.dumps(child(*args.child, args.images, Path(args.workdir), args.batch_size, workers, args.decode)))
        return
    from rich.console import Console
    from rich.table import Table

    models = args.models or (GPU_MODELS if cuda else CPU_MODELS)
    n = args.images or (5000 if cuda else 300)
    n_ref = min(n, args.reference_images or (1000 if cuda else n))
    machine = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores, {platform.processor() or 'x86'})"
    table = Table(title=f"extraction, JPEG files -> committed store rows; {machine}, torch {torch.__version__}")
    compare = args.compare_decode or (cuda and args.decode == "auto")
    cols = ["model", "images", "reference img/s", "medprobe img/s", "ratio", "ref peak RSS MB", "medprobe RSS MB"]
    cols += ["medprobe decode", "stage s (read/decode/preprocess/forward/write)"]
    cols += ["--decode pil img/s"] if compare else []
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "medprobe decode") else "right")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        work = Path(tmp)
        write_images(work / "images", n)
        for model in models:
            res = {}
            methods = [("reference", n_ref), ("medprobe", n)] + ([("medprobe-pil", n)] if compare else [])
            for method, count in methods:
                if method == "medprobe-pil" and not res["medprobe"]["decode"].startswith("torchvision"):
                    continue  # the model has no device path: medprobe ran the PIL path already
                cmd = [sys.executable, __file__, "--child", model, method, "--images", str(count), "--workdir", tmp,
                       "--batch-size", args.batch_size, "--workers", str(workers), "--decode", args.decode]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise SystemExit(f"{model} {method} failed:\n{out.stderr[-3000:]}")
                res[method] = json.loads(out.stdout.strip().splitlines()[-1])
            ref, med = res["reference"], res["medprobe"]
            rows.append({"bench": "extract", "device": machine, "model": model, "reference": ref, "medprobe": med,
                         "ratio": med["images_per_s"] / ref["images_per_s"],
                         "medprobe_pil": res.get("medprobe-pil")})  # fmt: skip
            st = med["stage_seconds"]
            cells = [
                model,
                f"{ref['images']:,} / {med['images']:,}",
                f"{ref['images_per_s']:,.1f}",
                f"{med['images_per_s']:,.1f}",
                f"{med['images_per_s'] / ref['images_per_s']:,.1f}x",
                f"{ref['peak_rss_mb']:,.0f}",
                f"{med['peak_rss_mb']:,.0f}",
                med["decode"],
                "/".join(f"{st[k]:.1f}" for k in ("read", "decode", "preprocess", "forward", "write")),
            ]
            if compare:
                cells.append(f"{res['medprobe-pil']['images_per_s']:,.1f}" if "medprobe-pil" in res else "(same)")
            table.add_row(*cells)
    Console(width=200).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
