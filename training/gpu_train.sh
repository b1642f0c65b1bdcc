#!/usr/bin/env bash
# The embedded model's training on the GPU machine (the device tool), spread over calls of at most
# 10 minutes: the training runs detached (setsid) and each call waits on it while the machine stays held.
#   bash training/gpu_train.sh start MINUTES [ARGS...]  # start training (MINUTES; ARGS to train_embedded.py), then wait
#   bash training/gpu_train.sh wait            # wait on the running training (within one call)
#   bash training/gpu_train.sh watch           # while it trains, score each finished snapshot (rank_snapshots.py)
#   bash training/gpu_train.sh finish STEP...  # wait for the end, score the rest, pick one (ceiling MAX_PPL),
#                                              # run training/gpu_after.sh STEP on it for each STEP (adapters
#                                              # detached, only for a pick), pack to $OUT: the pick, or with
#                                              # PACK=final the final model (only one model fits $OUT)
#   bash training/gpu_train.sh adapters        # wait for those adapters, pack them to $OUT
#   bash training/gpu_train.sh paused          # wait for a sitting that --stop-after pauses, pack <out>/paused to
#                                              # $OUT: the next session's --resume-from (the checkpoint is too big)
# Carry .data (corpus, validation text, tokenizer). WAIT_S bounds each call's wait (default 540).
# `start` trains data-parallel (torchrun, one process a GPU) on every visible GPU when there are several;
# TRAIN_GPUS=N uses the first N, CUDA_VISIBLE_DEVICES=0 keeps the others free for other calls.
# RUN_TAG=B keeps a second run apart (/tmp/embeddedB, /tmp/trainB.log, /tmp/resultsB): two variants, one a GPU.
# INIT=DIR (the run's --init) for watch and finish: score that model too (first), and pick only a model that
# reads better than it, so a run that made its starting model worse ships nothing and converts no adapters.
set -uo pipefail
export PYTHONUNBUFFERED=1
TAG=${RUN_TAG:-}
OUT=${OUT:-/tmp/out}; RUN=/tmp/embedded$TAG; LOG=/tmp/train$TAG.log; RESULTS=/tmp/results$TAG; RANK=$RESULTS/rank
mkdir -p "$OUT" "$RUN" "$RANK"

training() {  # whether this run's training (its --out, not another tag's) still runs
  pgrep -f -- "train_embedded.py .*--out $RUN --minutes" >/dev/null
}

wait_on() {  # wait until the training exits or $1 seconds pass; show how far it got
  local until=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$until" ] && training; do sleep 5; done
  grep -E "^\[(data|model|resume|ddp|val|eval|done|pause)\]|Error|error" "$LOG" | tail -20
  tail -3 "$LOG"
  cp "$LOG" "$OUT/train$TAG.log"
}

visible_gpus() {  # nvidia-smi lists every GPU, whatever CUDA_VISIBLE_DEVICES hides
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .
  else nvidia-smi -L | wc -l; fi
}

score_init() {  # the starting model's row, beside the rank files: finish shows it in the table, never picks it
  [ -n "${INIT:-}" ] && [ ! -f "$RESULTS/init.json" ] &&
    python3 training/rank_snapshots.py "$INIT" --out "$RESULTS/init" | tail -1
  return 0
}

score_snapshots() {  # score every finished, unscored snapshot on the visible GPU (tokenizer.json is written last)
  for d in "$RUN"/snapshots/step-*; do
    [ -f "$d/tokenizer.json" ] && [ ! -f "$RANK/$(basename "$d").json" ] || continue
    python3 training/rank_snapshots.py "$d" --out "$RANK/$(basename "$d")" | tail -1
  done
}

case ${1:-} in
  start)
    minutes=${2:-15}; shift 2
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    gpus=${TRAIN_GPUS:-$(visible_gpus)}; launch=(python3)
    # torchrun as a module (no PATH needed); its command line and its ranks' keep train_embedded.py for pgrep
    [ "$gpus" -gt 1 ] && launch=(python3 -m torch.distributed.run --standalone --nproc_per_node "$gpus")
    echo "training on $gpus GPU(s): ${launch[*]}"
    setsid nohup "${launch[@]}" training/train_embedded.py --data .data --tokenizer .data/tokenizer --out "$RUN" \
      --minutes "$minutes" --resume "$@" >"$LOG" 2>&1 < /dev/null &
    sleep 2; wait_on "${WAIT_S:-540}" ;;
  wait) wait_on "${WAIT_S:-540}" ;;
  watch)
    until=$(( $(date +%s) + ${WAIT_S:-480} ))
    score_init
    while [ "$(date +%s)" -lt "$until" ] && training; do score_snapshots; sleep 10; done
    tail -2 "$LOG" ;;
  finish)
    wait_on 600
    [ -f "$RUN/config.json" ] || { echo "no model yet"; exit 1; }
    sleep 3; score_snapshots
    [ -f "$RANK/final.json" ] || python3 training/rank_snapshots.py "$RUN" --out "$RANK/final" | tail -1
    score_init; beat=(); [ -f "$RESULTS/init.json" ] && beat=("$RESULTS/init.json" --beat "$RESULTS/init.json")
    chosen=$(python3 training/rank_snapshots.py --pick "$RANK"/*.json "${beat[@]}" --max-ppl "${MAX_PPL:-37.0}" \
      --out "$RESULTS/rank")
    echo "chosen: ${chosen:-none (within perplexity ${MAX_PPL:-37.0}, every sample answered, better than INIT)}"
    cat "$RESULTS/rank.md"
    model=${chosen:-$RUN}
    shift
    for step in "$@"; do
      if [ "$step" != adapters ]; then bash "training/gpu_after.sh" "$step" "$model" "$RESULTS" || true
      # the adapters take minutes on both GPUs: only for a model that can ship, detached (`adapters` collects them)
      elif [ -n "$chosen" ]; then
        setsid nohup bash training/gpu_after.sh adapters "$model" "$RESULTS" >/tmp/adapters$TAG.log 2>&1 </dev/null &
      else echo "adapters skipped: no model passes the sample prompts within the ceiling"; fi
    done
    # $OUT takes at most 8 files of 16 MiB: one tar of the results and the chosen model (else the final
    # one), results first, so that the first part holds them when later parts do not come back
    cp "$LOG" "$RUN"/training_log.json "$RUN"/README.md "$RESULTS"/ 2>/dev/null
    packed=$model; [ "${PACK:-pick}" = final ] && packed=$RUN  # a next run's --init, when the final is better
    tar -cf - -C /tmp "results$TAG" -C "$(dirname "$packed")" --exclude=checkpoint.pt --exclude=snapshots \
      --exclude=paused "$(basename "$packed")" 2>/dev/null | split -b 15M - "$OUT/run$TAG.tar.part-"
    ls -la "$OUT" ;;
  adapters)  # wait (WAIT_S at most) for the adapters that finish started, then pack them to $OUT
    until=$(( $(date +%s) + ${WAIT_S:-540} ))
    while [ "$(date +%s)" -lt "$until" ] && pgrep -f "gpu_after.sh adapters" >/dev/null; do sleep 5; done
    tail -n 3 "$RESULTS"/convert_*.txt
    (cd "$RESULTS" && tar -cf "$OUT/adapters.tar" $(ls -d recurformer-embedded-* convert_*.txt 2>/dev/null)) ;;
  paused)
    wait_on "${WAIT_S:-540}"
    [ -f "$RUN/paused/progress.json" ] || { echo "no paused run in $RUN"; exit 1; }
    tar -cf - -C "$RUN" paused | split -b 15M - "$OUT/paused.tar.part-"
    ls -la "$OUT" ;;
  *) echo "usage: $0 start MINUTES | wait | watch | finish STEP... | adapters | paused"; exit 2 ;;
esac
