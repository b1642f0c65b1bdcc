#!/usr/bin/env bash
# Run on the GPU machine: stage B (end-to-end distillation) of a shipped RecurFormer adapter with far more
# data than the CPU allows, then the quality report against the window twin, all on the GPU.
#   bash benchmarks/distill_gpu.sh SHARE GROUPS SECONDS [CONVERT_ARGS...]   e.g. 25 1:1,3:0,3:1,7:1,8:0,10:1 300
# STEPS=N skips the timing run and trains N steps. Extra arguments go to `convert` (e.g. --taps 4).
# Needs .data/corpus_train.txt.xz (training/; carried to the GPU machine). Results go to $OUT.
set -euo pipefail
share=$1 groups=$2 budget=$3
shift 3
OUT=${OUT:-/tmp/out}
xz -dc .data/corpus_train.txt.xz | head -c 24000000 > /tmp/train.txt || true  # ~6M tokens (xz stops on the closed pipe)
common=(--groups "$groups" --init-adapter "pyramid_core/assets/recurformer-embedded-$share" --steps 0 --distill-lr 3e-4
        --calibration-file /tmp/train.txt --max-tokens 1024 --device cuda --dtype float32 --json "$@")
# time 50 steps, then fit the step count into the budget (one new sequence per step)
if [ -z "${STEPS:-}" ]; then
  per_step=$(python -m pyramid_core convert "${common[@]}" --distill-steps 50 --samples 50 --out /tmp/probe \
    | python -c "import json,sys; s=json.load(sys.stdin)['stats']['distill']; print(s['train_seconds'] / s['steps'])")
  STEPS=$(python -c "print(int($budget / $per_step))")
  echo "$per_step s a step: $STEPS steps"
fi
steps=$STEPS
python -m pyramid_core convert "${common[@]}" --distill-steps "$steps" --samples "$steps" --out "$OUT/recurformer-embedded-$share" \
  | python -c "import json,sys; s=json.load(sys.stdin)['stats']['distill']; print(json.dumps(s))"
python -m pyramid_core eval --compare recurformer --adapters "$OUT/recurformer-embedded-$share" --device cuda \
  --samples 16 --probes 32 --short-filler 100 --out "$OUT/recurformer_quality_gpu_$share"
