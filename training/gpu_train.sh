#!/usr/bin/env bash
# The embedded model's training on the GPU machine (the device tool), spread over calls of at most
# 10 minutes: the training runs detached (setsid) and each call waits on it while the machine stays held.
#   bash training/gpu_train.sh start MINUTES [ARGS...]  # start training (MINUTES; ARGS to train_embedded.py), then wait
#   bash training/gpu_train.sh wait            # wait on the running training (within one call)
#   bash training/gpu_train.sh finish STEP...  # wait for the end, run training/gpu_after.sh STEP for each, pack to $OUT
# Carry .data (corpus, validation text, tokenizer). WAIT_S bounds each call's wait (default 540).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; RUN=/tmp/embedded; LOG=/tmp/train.log
mkdir -p "$OUT" "$RUN"

wait_on() {  # wait until the training exits or $1 seconds pass; show how far it got
  local until=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$until" ] && pgrep -f train_embedded.py >/dev/null; do sleep 5; done
  grep -E "^\[(data|model|resume|val|eval|done|pause)\]|Error|error" "$LOG" | tail -20
  tail -3 "$LOG"
  cp "$LOG" "$OUT/train.log"
}

case ${1:-} in
  start)
    minutes=${2:-15}; shift 2
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    setsid nohup python3 training/train_embedded.py --data .data --tokenizer .data/tokenizer --out "$RUN" \
      --minutes "$minutes" --resume "$@" >"$LOG" 2>&1 < /dev/null &
    sleep 2; wait_on "${WAIT_S:-540}" ;;
  wait) wait_on "${WAIT_S:-540}" ;;
  finish)
    wait_on 600
    [ -f "$RUN/config.json" ] || { echo "no model yet"; exit 1; }
    shift; for step in "$@"; do bash "training/gpu_after.sh" "$step" "$RUN" /tmp/results || true; done
    # $OUT takes at most 8 files of 16 MiB: one tar of the model and results, in 15 MB parts
    tar -cf - -C /tmp --exclude=checkpoint.pt embedded results 2>/dev/null | split -b 15M - "$OUT/run.tar.part-"
    ls -la "$OUT" ;;
  *) echo "usage: $0 start MINUTES | wait | finish"; exit 2 ;;
esac
