#!/usr/bin/env bash
# One-shot GPU check of the device ingestion path (issue 8, parts 1 and 5a), for a machine with a CUDA GPU.
#
#   bash bench/gpu_check.sh                 # from the repository root, with .venv built
#   PY=python OUT=/tmp/gpu bash bench/gpu_check.sh
#
# 1. the device decode and encoder tests, on CUDA this time (they skip their CUDA cases without a GPU);
# 2. bench/ingest.py's device mode for ViT-B-32 and ViT-L-14 (random weights, synthetic JPEGs in memory,
#    nothing downloaded), GPU decode then CPU decode for comparison.
# Targets on one H200-class GPU, end to end: ViT-B-32 >= 5,000 images/s, ViT-L-14 >= 1,500 images/s.
# Everything is printed and also written under $OUT (default ./gpu-check); about 5 to 8 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu-check}
COUNT_B=${COUNT_B:-16384}
COUNT_L=${COUNT_L:-4096}
mkdir -p "$OUT"
status=0

run() {  # run NAME COMMAND...: tee the output to $OUT/NAME.log, remember a failure, go on
    local name=$1; shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "=== $name FAILED (exit $rc)"; status=1; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'CUDA is not available to torch'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
    || { echo "no CUDA: nothing to check here"; exit 2; }

run tests "$PY" -m pytest -q -p no:cacheprovider tests/unit/indexer/test_gpu_decode.py \
    tests/unit/embed/test_device_preprocess.py -rs
run b32-gpu-decode "$PY" bench/ingest.py --device cuda --model open_clip:ViT-B-32/random --decode gpu --count "$COUNT_B"
run l14-gpu-decode "$PY" bench/ingest.py --device cuda --model open_clip:ViT-L-14/random --decode gpu --count "$COUNT_L"
run b32-cpu-decode "$PY" bench/ingest.py --device cuda --model open_clip:ViT-B-32/random --decode cpu --count 4096
run b32-gpu-decode-compiled "$PY" bench/ingest.py --device cuda --model open_clip:ViT-B-32/random --decode gpu \
    --count "$COUNT_B" --compile

echo "=== summary"
grep -H -E "images/s|ratio|no GPU|batch" "$OUT"/*.log
exit $status
