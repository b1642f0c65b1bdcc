#!/usr/bin/env bash
# benchmarks/app_gpu.py on the GPU machine, Gradio and Plotly from .cpusite/site.tgz (bash benchmarks/cpu_site.sh
# here first; the device tool carries .cpusite). Results to $OUT (app_gpu.json, app_gpu.md).
#   bash benchmarks/app_gpu.sh            (embedded and the Llama-3.2-1B shape, ~3 minutes)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
mkdir -p /tmp/site && tar -C /tmp/site -xzf .cpusite/site.tgz || exit 1
PYTHONPATH=/tmp/site:.${PYTHONPATH:+:$PYTHONPATH} timeout 560 python benchmarks/app_gpu.py --out "$OUT" "$@" 2>&1 | tail -80
