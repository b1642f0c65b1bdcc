#!/usr/bin/env bash
# Run on the GPU machine (the device tool): GPU tests, kernel checks and benchmark suites, results to $OUT.
#   bash benchmarks/gpu_run.sh tests kernels engine overhead prefill8k recurformer table1
#   bash benchmarks/gpu_run.sh fused_tests rnn_step h2o_step     # the fused decode steps and the step graphs (~4 minutes)
#   bash benchmarks/gpu_run.sh modes_paired studio               # H2O's two paths and RecurFormer against the
#       baseline on the 7B shape in the same rounds (~3 min); the studio benchmark on uvloop and on asyncio
#       (~3 min, needs .cpusite and the embedded model)
#   bash benchmarks/gpu_run.sh policy_share       # the policies' share of a batch-1 step, cuts included (~2 min)
#   bash benchmarks/gpu_run.sh policy_share_reserve  # the same over a reserved KV (quiet steps as one graph)
#   bash benchmarks/gpu_run.sh profile7b          # a batch-1 7B step's GPU-busy share and profile tables (~2 min)
#   bash benchmarks/gpu_run.sh roofline           # the baseline's batch-1 7B step against the card's bandwidth:
#       achieved GB/s, its share of the datasheet's and of a measured copy's, the GPU-busy share (~2 min)
#   bash benchmarks/gpu_run.sh modes_reserve      # every mode over a reserved KV (quiet steps: one graph a step, ~6 min)
#   bash benchmarks/gpu_run.sh table1_reserve     # Table 1 whole with --reserve-kv: HF, baseline, PyramidInfer 45% (~5 min)
#   bash benchmarks/gpu_run.sh table1_reserve_expandable  # the same with expandable segments for every row (~5 min)
#   bash benchmarks/gpu_run.sh alloc_rows  # Table 1's largest rows at fixed batches under both allocator settings (~3 min)
#   bash benchmarks/gpu_run.sh cut_tests cut_sweep profile_table1  # PyramidInfer's decode cut: its kernels' tests,
#       their settings at Table 1's 140 rows, and the whole run at 134 rows profiled (~6 min)
#   bash benchmarks/gpu_run.sh profile_prefill   # PyramidInfer's and the baseline's prefills at Table 1's largest
#       batches, kernel by kernel (~3 min)
#   bash benchmarks/gpu_run.sh batch_sweep        # the decode kernel's settings at Table 1's largest batches, a whole
#       step's 40 layers for PyramidInfer (138 rows) and the baseline (74), with and without the count of slots in use (~2 min)
#   bash benchmarks/gpu_run.sh split_sweep step_time  # the split decode kernel's settings at batch 1 (~1 min); where
#       a batch-1 7B step of the whole-step graph spends its time, kernels by name (~1 min)
#   bash benchmarks/gpu_run.sh step_time_modes    # the same for each mode on the embedded model (~1 min)
#   bash benchmarks/gpu_run.sh policy_spans newest_sweep  # PyramidInfer's decode() spans per asking step in two
#       identical runs (~30 s); the decode kernel with and without its voters' logits at 140-164 rows (~20 s)
#   bash benchmarks/gpu_run.sh tail_sweep     # the same row by row across 156-164, with and without the logits,
#       and split in two (~1 min): whether 158 -> 160 rows' jump is the kernel's last round of programs
#   bash benchmarks/gpu_run.sh splits_check   # the baseline's 74 rows split 1-4 ways, PyramidInfer's 160 in 3 and 4,
#       its 140 in 1 and 2 (~15 s)
#   bash benchmarks/gpu_run.sh step_time_7b_modes # the same on the 7B shape for the baseline, H2O and RecurFormer (~2 min)
#   bash benchmarks/gpu_run.sh start table1_reserve_expandable modes_reserve policy_share_reserve roofline targets
#       # issue 19's whole record in one call on one card (~14 min), then its verdicts (benchmarks/targets_*.md);
#       # Table 1 under expandable segments for every row, the layout the allocator cannot fragment (targets.py)
#   bash benchmarks/gpu_run.sh modes_reserve_7b h2o_reserve_7b  # the 7B rows of modes_reserve, H2O apart (~4 min)
# Longer than a call: `bash benchmarks/gpu_run.sh start STEPS...` runs the steps detached (setsid) and waits on them
# for WAIT_S seconds (default 540), copying the log and the results so far to $OUT; `bash benchmarks/gpu_run.sh wait`
# in each later call (the machine is given back after ~30 s without a call: make the next call at once).
#   bash benchmarks/gpu_run.sh evict_graphs       # H2O with and without its steady-step graphs in the same
#       rounds (the h2o-eager variant), and their tests on CUDA (~3 min)
#   bash benchmarks/gpu_run.sh h2o_host           # where an eager H2O layer step spends the host's time (~30 s)
# flash-linear-attention travels as wheels in .whl/ (pip download fla-core einops; see the README).
# app_overhead runs benchmarks/app_overhead.py on this machine's CPU (a second CPU to check on), pinned to
# APP_CORES (default 0,1: two cores, as on the development machines), with Gradio and Plotly from
# .cpusite/site.tgz (benchmarks/cpu_site.sh): APP_CORES=0-3 APP_THREADS=2 APP_REPEATS=16 (16 at 2 cores: ~8 minutes, within one call).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; RES=/tmp/bench; mkdir -p "$OUT" "$RES"

wait_on() {  # wait until the detached run ends or WAIT_S seconds pass; its log and results so far to $OUT
  local until=$(( $(date +%s) + ${WAIT_S:-540} ))
  while [ "$(date +%s)" -lt "$until" ] && kill -0 "$(cat /tmp/bench.pid)" 2>/dev/null; do sleep 5; done
  grep -E "^=== |passed|failed|tok/s|Error" /tmp/bench.log | tail -40
  cp /tmp/bench.log "$OUT/log.txt"; tar -C "$RES" -cf "$OUT/results.tar" .
}

case ${1:-} in
  start) shift
    OUT=/tmp/bench_out setsid nohup bash "$0" "$@" >/tmp/bench.log 2>&1 < /dev/null & echo $! > /tmp/bench.pid
    sleep 2; wait_on; exit ;;
  wait) wait_on; exit ;;
esac
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
for step in "$@"; do
  echo "=== $step $(date +%T)"
  case $step in
    tests) python -m pytest -q -rs tests/test_graphs.py tests/test_scores_kernel.py tests/test_decode_kernel.py tests/test_recurformer.py -k "cuda or gpu or triton or kernel"
      python -m pytest -q -rs tests/test_step_graphs.py -k cuda  # the whole-step graph captured for real
      python -m pytest -q -rs tests/test_decode_kernel.py tests/test_rope_write.py tests/test_rms_norm_kernel.py \
        tests/test_silu_mul_kernel.py tests/test_lowest_slot_kernel.py tests/test_recurformer_step_kernel.py tests/test_transfer.py
      python -m pytest -q -rs tests/test_decode_ahead.py tests/test_fused_weights.py -k "cuda or gpu"
      python -m pytest -q -rs tests/test_h2o_step_kernel.py -k "one_pass or kernel" ;;
    # the opt-in fused decode steps (off by default until these pass and are timed here): their kernels
    # compiled for real, against their twins, in the engine and in CUDA graphs
    fused_tests) PYRAMID_FUSED_RNN_STEP=1 PYRAMID_FUSED_H2O_STEP=1 python -m pytest -q -rs \
        tests/test_recurformer_step_kernel.py tests/test_stacked_rnn.py tests/test_joint_projection.py tests/test_h2o*.py \
        tests/test_side_stream.py tests/test_step_graphs.py tests/test_decode_kernel.py tests/test_evict_graphs.py \
        tests/test_scores.py tests/test_scores_kernel.py tests/test_move_slots_kernel.py \
        tests/test_pyramid_decode_ops.py ;;
    rnn_step) python benchmarks/rnn_step_kernel.py "$RES/rnn_step_kernel.json" ;;
    h2o_step) PYTHONPATH=. python benchmarks/h2o_step_kernel.py "$RES/h2o_step_kernel.json" ;;
    kernels) python benchmarks/check_kernels.py "$RES/kernel_check.json" ;;
    modes_paired) python -m pyramid_core bench modes --quick --repeats 3 --shapes llama2-7b \
        --modes baseline,h2o-slot,h2o-position,recurformer --out "$RES" ;;
    # where a batch-1 7B step goes: the GPU's busy share, host and device tables, baseline against the modes
    profile7b) python benchmarks/profile_decode.py llama2-7b 1 1024 baseline recurformer pyramid h2o ;;
    # PyramidInfer's policy share with its decode-time cuts in the timed run (400 tokens after a 1k prompt)
    modes_reserve) python -m pyramid_core bench modes --quick --repeats 3 --reserve-kv --out "$RES" ;;
    # the embedded model's rows of modes_reserve alone (~2 min): its steps are the shortest, where a launch shows
    modes_reserve_embedded) python -m pyramid_core bench modes --quick --repeats 3 --reserve-kv --shapes embedded \
        --out "$RES" ;;
    modes_reserve_7b) python -m pyramid_core bench modes --quick --repeats 3 --reserve-kv --shapes llama2-7b \
        --modes baseline,pyramid,streaming,snapkv,recurformer,pyramid+recurformer --out "$RES" ;;
    h2o_reserve_7b) python -m pyramid_core bench modes --quick --repeats 3 --reserve-kv --shapes llama2-7b \
        --modes baseline,h2o --out "$RES/h2o" ;;
    split_sweep) PYTHONPATH=. python benchmarks/decode_split_sweep.py "$RES/decode_split_sweep.json" | tail -60 ;;
    cut_sweep) PYTHONPATH=. python benchmarks/cut_kernels_sweep.py "$RES/cut_kernels_sweep.json" ;;
    batch_sweep) PYTHONPATH=. python benchmarks/decode_batch_sweep.py "$RES/decode_batch_sweep.json" ;;
    # the decode kernel with and without PyramidInfer's voter logits at 140 and 160 rows (~1 min)
    newest_sweep) PYTHONPATH=. python benchmarks/decode_batch_sweep.py "$RES/decode_newest_sweep.json" newest ;;
    # the same row by row across 156-164, with and without the logits, and split in two (~1 min)
    tail_sweep) PYTHONPATH=. python benchmarks/decode_batch_sweep.py "$RES/decode_tail_sweep.json" tail ;;
    # the baseline's 74 rows split 1-4 ways, PyramidInfer's 160 in 3 and 4, its 140 in 1 and 2 (~15 s)
    splits_check) PYTHONPATH=. python benchmarks/decode_batch_sweep.py "$RES/decode_split_check.json" splits ;;
    # Table 1's PyramidInfer at its largest batch, step by step: memory, collections, profile tables (~3 min)
    profile_table1) PROFILE_RESERVE=1 PROFILE_NEW=256 PROFILE_DTYPE=float16 python benchmarks/profile_decode.py \
        llama2-13b "${TABLE1_ROWS:-134}" 512 pyramid@table1-45 > "$RES/profile_table1_pyramid.txt"
      grep -E "prefill|peak|collections|busy" "$RES/profile_table1_pyramid.txt" | cut -c1-400 ;;
    # both prefills at Table 1's largest batches, kernel by kernel (~3 min)
    profile_prefill) for run in "${TABLE1_ROWS:-138} pyramid@table1-45" "${BASELINE_ROWS:-74} baseline"; do
        read -r rows mode <<< "$run"
        PROFILE_PREFILL=1 PROFILE_RESERVE=1 PROFILE_NEW=256 PROFILE_DTYPE=float16 python benchmarks/profile_decode.py \
          llama2-13b "$rows" 512 "$mode" > "$RES/profile_prefill_${mode%%@*}_$rows.txt"
        grep -E "prefill" "$RES/profile_prefill_${mode%%@*}_$rows.txt" | cut -c1-200
      done ;;
    cut_tests) python -m pytest -q -rs tests/test_scores_kernel.py tests/test_move_slots_kernel.py tests/test_head_mean_kernel.py \
        tests/test_scores.py tests/test_pyramid_decode_ops.py tests/test_deferred_gc.py tests/test_decode_kernel.py \
        tests/test_evict_graphs.py ;;
    step_time) PYTHONPATH=. python benchmarks/step_graph_time.py llama2-7b 1024 "$RES/step_graph_time_7b_1k.json" ;;
    # each mode's step on the embedded model (host about equal to GPU there): generate's, the engine's, the replay
    step_time_modes) PYTHONPATH=. python benchmarks/step_graph_time.py embedded 1024 \
        "$RES/step_graph_time_embedded_1k.json" baseline pyramid streaming h2o snapkv recurformer pyramid+recurformer ;;
    # the 7B shape's step kernel by kernel for the modes short of the baseline there (~2 min)
    step_time_7b_modes) PYTHONPATH=. python benchmarks/step_graph_time.py llama2-7b 1024 \
        "$RES/step_graph_time_7b_1k_modes.json" baseline h2o recurformer ;;
    table1_reserve) python -m pyramid_core bench table1 --reserve-kv --memory-cap-gb 80 \
        --batch32-methods hf-generate,engine-baseline,pyramid-45 --methods hf-generate,engine-baseline,pyramid-45 \
        --out "$RES" ;;
    # the same under expandable segments, for every row (the issue's other honest layout, the suite's; ~5 min)
    table1_reserve_expandable) PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python -m pyramid_core bench table1 \
        --reserve-kv --memory-cap-gb 80 --batch32-methods hf-generate,engine-baseline,pyramid-45 \
        --methods hf-generate,engine-baseline,pyramid-45 --out "$RES/expandable" ;;
    # the baseline at 74 rows and PyramidInfer at 160 under each allocator setting, and PyramidInfer at 168 under
    # expandable segments, in one call: whether the setting itself moves a row's rate (~3 min)
    alloc_rows) PYTHONPATH=. python benchmarks/table1_rows.py "$RES/table1_rows_default.json" engine-baseline:74 \
            pyramid-45:160
        PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True PYTHONPATH=. python benchmarks/table1_rows.py \
            "$RES/table1_rows_expandable.json" engine-baseline:74 pyramid-45:160 pyramid-45:168 ;;
    # RecurFormer at 32k tokens, batch 1, beside the baseline and PyramidInfer (issue 19: at least the baseline's
    # speed there; ~5 min): benchmarks/modes/modes_quick_llama2-7b_reserve_kv_2026-12-03_32k.md
    recurformer_32k) for shape in llama3.2-1b llama2-7b; do python -m pyramid_core bench modes --quick --repeats 3 \
            --reserve-kv --shapes "$shape" --prompts 32768 --batches 1 \
            --modes baseline,pyramid,recurformer,pyramid+recurformer --out "$RES/recurformer_32k"; done ;;
    # issue 19's targets off this call's results (no GPU needed; after modes_reserve, policy_share_reserve,
    # roofline, table1_reserve_expandable or table1_reserve, the expandable one judged where both ran): targets.md
    # says what is met
    targets) python -m pyramid_core bench targets --out "$RES" ;;
    policy_share) python -m pyramid_core bench modes --quick --repeats 3 --shapes llama2-7b --prompts 1024 \
        --modes baseline,pyramid,h2o,streaming --policy-tokens 400 --out "$RES" ;;
    policy_share_reserve) python -m pyramid_core bench modes --quick --repeats 3 --shapes llama2-7b --prompts 1024 \
        --modes baseline,pyramid,h2o,streaming --policy-tokens 400 --reserve-kv --out "$RES/policy_reserve" ;;
    # PyramidInfer's decode() spans per asking step, two identical runs in one process (~1 min)
    policy_spans) PYTHONPATH=. python benchmarks/policy_spans.py llama2-7b 1024 400 > "$RES/policy_spans_7b.txt"
      grep "^run" "$RES/policy_spans_7b.txt" ;;
    evict_graphs)
      python -m pytest -q tests/test_evict_graphs.py tests/test_h2o_step_kernel.py | tail -3
      python -m pyramid_core bench modes --quick --repeats 3 --shapes embedded,llama3.2-1b,llama2-7b \
        --prompts 1024 --modes baseline,h2o,h2o-eager --out "$RES" ;;
    h2o_host) PYTHONPATH=. python benchmarks/h2o_host_cost.py "$RES/h2o_host_cost.json" ;;
    studio)
      for loop in uvloop asyncio; do
        OUT="$RES/studio_$loop" bash benchmarks/app_gpu.sh --warm-runs 3 --models embedded \
          $([ "$loop" = asyncio ] && echo --no-uvloop) | tail -5
      done ;;
    app_overhead)
      mkdir -p /tmp/cpusite && tar -C /tmp/cpusite -xzf .cpusite/site.tgz || exit 1
      lscpu | grep -E "Model name|^CPU\(s\)|Thread|NUMA node0" ; nproc
      cores=${APP_CORES:-0,1}; threads=${APP_THREADS:-2}; repeats=${APP_REPEATS:-16}
      CUDA_VISIBLE_DEVICES="" PYTHONPATH=/tmp/cpusite${PYTHONPATH:+:$PYTHONPATH} taskset -c "$cores" \
        python benchmarks/app_overhead.py --threads "$threads" --repeats "$repeats" \
          --out "$RES/app_overhead_cores${cores//[,-]/_}_threads$threads.json" | tail -30 ;;
    *) python -m pyramid_core bench "$step" --out "$RES" ;;
  esac
done 2>&1 | tee "$OUT/log.txt"
tar -C "$RES" -cf "$OUT/results.tar" .
