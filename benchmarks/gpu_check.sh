#!/usr/bin/env bash
# The prepared GPU check (issue 13): GPU-marked tests, then the extraction and probe benchmarks side by side with
# their baselines, written as one Markdown table. Sized to finish in about 8 minutes on one H100, so it can run twice
# within a session's 15 minutes of device time.
#
# On a lent GPU machine (it starts bare and offline): fetch the wheels here first, then carry them:
#     bash benchmarks/gpu_wheels.sh
#     run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)   # the table lands in $OUT
# Anywhere else (CI, a laptop): `bash benchmarks/gpu_check.sh --dry-run` runs every step on the CPU with tiny sizes.
#
# Options: --dry-run (CPU, tiny sizes), --out FILE (default $OUT/gpu_check.md, else ./gpu_check.md).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT_FILE="${OUT:-.}/gpu_check.md"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT_FILE="$2"; shift ;;
        *) echo "gpu_check: unknown option $1 (use --dry-run, --out FILE)" >&2; exit 2 ;;
    esac
    shift
done

start=$SECONDS
PY="${PYTHON:-python3}"
if [[ $DRY == 0 ]] && compgen -G ".whl/*.whl" > /dev/null; then  # a bare GPU machine: install what it lacks
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site . \
        || { echo "gpu_check: installing medprobe failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RESULTS="$(mktemp -d)"
trap 'rm -rf "$RESULTS"' EXIT

if [[ $DRY == 1 ]]; then
    DEVICE=cpu
    echo "dry run on the CPU ($(nproc) cores), tiny sizes: the numbers mean nothing" > "$RESULTS/device.txt"
    TRAINER=(--rows 400 --dim 32 --layers 2 --cs 3 --sklearn-probes 2 --study-probes 1 --epochs 2 --repeats 1)
    EXTRACT=(--models tiny-random/clip tiny-random/timm-vit --images 24 --reference-images 8 --workers 1 --decode torchvision
             --compare-decode)
    T_TESTS=120; T_TRAIN=120; T_EXTRACT=240
else
    DEVICE=cuda
    "$PY" - > "$RESULTS/device.txt" <<'EOF' || { echo "gpu_check: no CUDA device (use --dry-run)" >&2; exit 1; }
import torch
assert torch.cuda.is_available(), "no CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
    # 32 layers x 8 C on 20,000 x 4,096 (the issue's probe target); sklearn fits 2 of the 256 for the ratio
    TRAINER=(--rows 20000 --dim 4096 --layers 32 --cs 8 --sklearn-probes 2 --study-probes 1 --repeats 1)
    EXTRACT=(--models random-full/clip random-full/idefics random-full/timm-vit --images 3000 --reference-images 300)
    T_TESTS=150; T_TRAIN=150; T_EXTRACT=300
fi
echo "gpu_check: $(cat "$RESULTS/device.txt")"

echo "gpu_check: GPU-marked tests"
timeout "$T_TESTS" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests > "$RESULTS/tests.log" 2>&1
tail -n 1 "$RESULTS/tests.log" | sed 's/=//g; s/^ *//; s/ *$//' > "$RESULTS/tests.txt"
cat "$RESULTS/tests.txt"

echo "gpu_check: probes ($DEVICE)"
timeout "$T_TRAIN" "$PY" benchmarks/bench_trainer.py --device "$DEVICE" "${TRAINER[@]}" --json "$RESULTS/trainer.json" \
    > "$RESULTS/trainer.log" 2>&1 || echo "gpu_check: the probe benchmark failed or ran out of time" >&2
tail -n 20 "$RESULTS/trainer.log"

echo "gpu_check: extraction"
timeout "$T_EXTRACT" "$PY" benchmarks/bench_extract.py "${EXTRACT[@]}" --json "$RESULTS/extract.json" \
    > "$RESULTS/extract.log" 2>&1 || echo "gpu_check: the extraction benchmark failed or ran out of time" >&2
tail -n 20 "$RESULTS/extract.log"

mkdir -p "$(dirname "$OUT_FILE")"
"$PY" benchmarks/gpu_table.py "$RESULTS" > "$OUT_FILE"
for log in tests trainer extract; do cp "$RESULTS/$log.log" "$(dirname "$OUT_FILE")/gpu_check_$log.log" 2>/dev/null; done
cat "$OUT_FILE"
echo "gpu_check: done in $((SECONDS - start)) s; table in $OUT_FILE"
