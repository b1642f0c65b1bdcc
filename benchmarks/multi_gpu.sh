#!/usr/bin/env bash
# On the 2-GPU machine: the multi-GPU benchmark and the out-of-memory check, results to $OUT (~4 minutes).
#   bash benchmarks/multi_gpu.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpus.txt"
python -m pytest -q -rs tests/test_placement.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
python benchmarks/multi_gpu.py --out "$OUT" 2>&1 | grep -v "Loading weights" | tee "$OUT/multi_gpu.log"
CUDA_VISIBLE_DEVICES=0 python benchmarks/oom_gpu.py --out "$OUT" 2>&1 | tee "$OUT/oom_gpu.log"
