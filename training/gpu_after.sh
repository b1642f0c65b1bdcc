#!/usr/bin/env bash
# After training, on the GPU machine: one step on the model in MODEL_DIR, results under RESULTS.
#   bash training/gpu_after.sh reading  MODEL_DIR RESULTS   # held-out reading tasks, baseline + modes
#   bash training/gpu_after.sh adapters MODEL_DIR RESULTS   # RecurFormer adapters 25% and 50%, in parallel
#   bash training/gpu_after.sh rank     RUN_DIR RESULTS     # score RUN_DIR, its snapshots (and $SHIPPED); best to RESULTS/chosen
#   bash training/gpu_after.sh gap      MODEL_DIR RESULTS   # training-pool vs held-out-pool accuracy (pool_gap.py)
# ADAPTER_STEPS / DISTILL_STEPS / ADAPTER_TIMEOUT size the conversion (stage A, stage B, seconds each).
set -uo pipefail
step=$1 model=$2 results=$3
mkdir -p "$results"
case $step in
  reading)
    python3 -m pyramid_core eval --reading --model "$model" --device cuda --batch 16 \
      --modes streaming,pyramid --json --out "$results/reading_gpu" > /dev/null && tail -12 "$results/reading_gpu.md" ;;
  adapters)
    python3 training/calibration_text.py --bytes 1500000 --out /tmp/calibration.txt
    gpus=$(nvidia-smi -L | wc -l); i=0
    for share in 25 50; do  # one GPU each where there are two
      CUDA_VISIBLE_DEVICES=$(( i++ % gpus )) timeout "${ADAPTER_TIMEOUT:-420}" python3 -m pyramid_core convert --model "$model" --replace "0.$share" \
        --loss o_proj --steps "${ADAPTER_STEPS:-1500}" --lr 1e-3 --samples 384 --max-tokens 1024 \
        --distill-steps "${DISTILL_STEPS:-500}" --distill-lr 3e-4 --calibration-file /tmp/calibration.txt \
        --device cuda --dtype float32 --out "$results/recurformer-embedded-$share" > "$results/convert_$share.txt" 2>&1 &
    done
    wait; tail -n 12 "$results"/convert_*.txt ;;
  rank)
    python3 training/rank_snapshots.py "$model"/snapshots/step-* "$model" ${SHIPPED:-} --out "$results/rank" 2>&1 | grep "^|"
    python3 training/rank_snapshots.py --pick "$results/rank.json" --max-ppl "${MAX_PPL:-37.0}" > "$results/chosen" \
      && echo "chosen: $(cat "$results/chosen")" ;;
  gap)
    python3 training/pool_gap.py "$model" --n 80 --out "$results/pool_gap.json" ;;
  *) echo "unknown step $step"; exit 2 ;;
esac
