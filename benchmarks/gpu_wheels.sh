#!/usr/bin/env bash
# Fetch (here, where PyPI is reachable) the wheels gpu_check.sh installs on a bare GPU machine into .whl/.
# The GPU image already has torch, torchvision, numpy, scipy, scikit-learn, pyarrow, pydantic, rich, safetensors,
# huggingface_hub, pillow, matplotlib and pytest; these are what medprobe needs beyond them, for the machine's
# Python 3.12. About 53 MB; the device tool carries at most 64 MiB with the working tree.
#
#     bash benchmarks/gpu_wheels.sh            # then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 duckdb==2.0.0 \
    typer==0.29.2 annotated-doc==0.0.7 transformers==5.23.0 tokenizers==0.23.3 timm==1.0.31 \
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 efficientnet-lite-pytorch==0.1.0 regex==2026.11.19
du -sh .whl
