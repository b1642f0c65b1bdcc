#!/usr/bin/env bash
# Run on the GPU machine (the device tool): GPU tests, kernel checks and benchmark suites, results to $OUT.
#   bash benchmarks/gpu_run.sh tests kernels engine overhead prefill8k recurformer table1
# flash-linear-attention travels as wheels in .whl/ (pip download fla-core einops; see the README).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; RES=/tmp/bench; mkdir -p "$OUT" "$RES"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
for step in "$@"; do
  echo "=== $step $(date +%T)"
  case $step in
    tests) python -m pytest -q -rs tests/test_graphs.py tests/test_scores.py tests/test_decode_kernel.py tests/test_recurformer.py -k "cuda or gpu or triton or kernel" ;;
    kernels) python benchmarks/check_kernels.py "$RES/kernel_check.json" ;;
    *) python -m pyramid_core bench "$step" --out "$RES" ;;
  esac
done 2>&1 | tee "$OUT/log.txt"
tar -C "$RES" -cf "$OUT/results.tar" .
