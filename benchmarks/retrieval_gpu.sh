#!/usr/bin/env bash
# The issue-17 suites on the GPU machine (the device tool), results to $OUT:
#   bash benchmarks/retrieval_gpu.sh
# - the default (CPU) retrieval suite pinned to 2 cores, timing it on an otherwise idle 2-core CPU;
# - meanwhile, on the other cores and the GPU: the full retrieval grid and the full long-generation run.
# Draw the figures afterwards here: python3 benchmarks/retrieval_figures.py <out>.json
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
last=$(( $(nproc) - 1 ))
taskset -c 0,1 python -m pyramid_core eval --suite retrieval --device cpu --threads 2 \
  --out "$OUT/retrieval_embedded_2cores" > "$OUT/cpu_log.txt" 2>&1 &
cpu=$!
{
  taskset -c 2-$last python -m pyramid_core eval --suite retrieval --full --device cuda --batch 32 \
    --out "$OUT/retrieval_embedded_gpu" | tail -3
  taskset -c 2-$last python -m pyramid_core eval --suite long --full --device cuda --batch 32 \
    --out "$OUT/long_generation_embedded_gpu" | tail -3
} > "$OUT/gpu_log.txt" 2>&1
wait $cpu
tail -3 "$OUT/cpu_log.txt"; grep -h "suite took" "$OUT"/*.md
