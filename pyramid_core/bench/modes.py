"""`bench modes`: every mode's decode speed against the baseline's, per model shape, batch and prompt.

The issue-19 grid: each mode x batch {1, 8} x prompt {1k, 8k} x shape {the embedded model, Llama-3.2-1B
and Llama-2-7B shapes with random weights}. Decode only: tokens/s over the decode steps' own times (the
engine's step records, each ending on a host read of the sampled tokens, so they are real), never the
prefill. Each (shape, batch, mode) first runs once at the shortest prompt (the warm-up: CUDA graph
capture, Triton compilation, cuBLAS plans); a cell's warm-up is the time of the steps its runs' records
mark as one-time work (StepRecord.warmup_s), which the decode rate leaves out (metrics.py).

Repeats, because one pass is noise: the same code's batch-1 baseline on the embedded model measured
553-581 tokens/s in one process and 336-338 in another (benchmarks/modes/noise_embedded_b1.md). Each
(shape, batch, prompt) runs `repeats` rounds (more where runs are short: Grid.min_decode_s), every mode
once a round, in an order that changes per round (round_order), so a slow stretch of the machine lands
on all modes rather than on one. A cell reports the median tokens/s, its spread ((max - min) / median)
and the median of the paired ratios mode_r / baseline_r: the baseline of the same round, so a round
where everything ran slow leaves the ratio where it was, and a slow baseline run cannot flatter every
mode.

At batch 1 two more runs wrap the policy in TimedPolicy (overhead.py): the milliseconds per decode step
the policy's scoring and selection add to the GPU's timeline (CUDA events, no synchronisation), and
their share of that run's own decode time, from the second (the first compiles what only a long run
reaches). They run once per cell, not per round, and can run longer than
the measured runs (`policy_tokens`): PyramidInfer scores and cuts at decode only every 20 steps once a
layer holds enough (after a 1k prompt, first at step 277), so a 64-step run times only its plain steps.
Results are written after every shape, so a run cut off keeps what it has.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine import generate
from ..metrics import decode_tokens_per_s, warmup_s
from ..policies import ALL_POLICIES
from ..policies.h2o import H2OPolicy, H2OState
from ..policies.registry import make_policy
from . import harness
from .overhead import TimedPolicy, sync

SHAPES = ("embedded", "llama3.2-1b", "llama2-7b")


@dataclass
class Grid:
    """What `bench modes` runs. new_tokens 64 (--quick) and 3 repeats keep the full grid within a
    ~6-minute call (one pass took ~190 s on an H200, of which ~65 s were the measured runs); min_decode_s
    adds rounds where the runs are short (the embedded model's), at a few seconds a cell."""

    shapes: tuple[str, ...] = SHAPES
    modes: tuple[str, ...] = tuple(ALL_POLICIES)
    batches: tuple[int, ...] = (1, 8)
    prompts: tuple[int, ...] = (1024, 8192)
    new_tokens: int = 256
    warmup_tokens: int = 8
    repeats: int = 3
    # more rounds, up to max_repeats, until every mode of a cell has decoded this long (0: repeats only)
    min_decode_s: float = 0.0
    max_repeats: int = 15
    policy_tokens: int | None = None  # the policy-timing run's tokens (None: new_tokens)
    reserve_kv: bool = False  # every run reserves its KV (cache.py): silent policies decode as one graph a step

    def __post_init__(self):
        assert self.repeats >= 1, f"repeats must be at least 1, got {self.repeats}"


def load_shape(shape: str, longest: int):
    """The embedded model (its RoPE run past its trained 4096 positions when a prompt needs it: speed
    does not depend on what the positions mean) or a random model of a public shape, on the GPU."""
    if shape != "embedded":
        return harness.random_model(shape, dtype=torch.bfloat16, max_positions=max(40960, longest))
    from ..models import load_model

    lm = load_model("embedded", device="cuda", dtype="bfloat16")
    lm.config.max_position_embeddings = max(lm.max_context, longest)
    return lm


@dataclass
class H2OOnOnePath(H2OPolicy):
    """H2O with its decode path fixed whatever h2o.FUSED_STEP says: the variants h2o-slot and h2o-position
    run in the same rounds, so the two paths' speeds are paired (the fifth session compared runs made in
    different sessions and could not tell a slower path from a slower machine)."""

    by_slot: bool = False

    def new_state(self, num_layers: int) -> H2OState:
        return H2OState(num_layers, by_slot=self.by_slot)


class H2OWithoutGraphs(H2OPolicy):
    """H2O on the slot path with every decode step eager (never `steady`, so evict_graphs.py never runs):
    the variant h2o-eager runs in the same rounds as h2o, so the graphs' gain is paired (the seventh
    session's two processes saw the embedded baseline itself move by 1.8x)."""

    def steady(self, state: H2OState, layer: int, counts: list[int]) -> bool:
        return False


VARIANTS = {"h2o-slot": lambda: H2OOnOnePath(by_slot=True), "h2o-position": lambda: H2OOnOnePath(by_slot=False),
            "h2o-eager": H2OWithoutGraphs}


def mode_policies(lm, modes, shape: str, scratch: Path) -> dict:
    """A policy per mode (or VARIANTS name), defaults throughout; RecurFormer gets the embedded model's
    trained adapter, or an untrained one over 25% of the KV groups for a random shape (speed does not
    depend on training)."""
    recurrent = {}
    if shape != "embedded" and any("recurformer" in m for m in modes):
        recurrent = {"adapter": harness.random_adapter(lm, 0.25, scratch / f"{shape}-25")}
    return {m: VARIANTS[m]() if m in VARIANTS else make_policy(m, recurrent if "recurformer" in m else {})
            for m in modes}


def prompts(lm, batch: int, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(3, lm.config.vocab_size, (batch, length), generator=gen).to(lm.device)


def decode_run(lm, policy, batch: int, prompt: int, new_tokens: int, reserve_kv: bool = False) -> dict:
    """One generation; decode tokens/s over its warm decode steps (metrics.py), the step time that
    implies, and the warm-up its records report."""
    records = list(generate(lm, prompts(lm, batch, prompt), policy=policy, max_new_tokens=new_tokens,
                            reserve_kv=reserve_kv))
    sync()
    rate = decode_tokens_per_s(records)
    # no EOS is given, so every warm step generates one token per row
    return {"decode_tokens_per_s": rate, "step_ms": 1e3 * batch / rate if rate else None,
            "warmup_s": warmup_s(records), "prefill_s": records[0].step_time_s,
            "kv_tokens_held": sum(records[-1].kept_tokens_per_row[0])}


def policy_time(lm, policy, prompt: int, new_tokens: int, reserve_kv: bool = False) -> dict:
    """At batch 1: the policy's milliseconds per decode step (its calls' spans on the GPU's timeline, or
    the host clock on a CPU) and their share of the run's decode time, from the second of two identical
    runs. The first is the warm-up of what only a long run reaches (PyramidInfer's first decode-time cut
    compiles its kernels); what it spent beyond the second is reported apart (policy_warmup_s)."""
    first_s = timed_decode(lm, policy, prompt, new_tokens, reserve_kv)[0]
    seconds, decode_s, steps = timed_decode(lm, policy, prompt, new_tokens, reserve_kv)
    return {"policy_ms_per_step": 1e3 * seconds / steps, "policy_share": seconds / decode_s if decode_s else None,
            "policy_run_tokens": new_tokens, "policy_warmup_s": max(0.0, first_s - seconds)}


def timed_decode(lm, policy, prompt: int, new_tokens: int, reserve_kv: bool) -> tuple[float, float, int]:
    """One batch-1 run with the policy timed: its decode-time seconds, the run's decode seconds, its steps."""
    timed = TimedPolicy(policy)
    records = list(generate(lm, prompts(lm, 1, prompt), policy=timed, max_new_tokens=new_tokens,
                            reserve_kv=reserve_kv))
    return timed.seconds["decode"], sum(r.step_time_s for r in records[1:]), max(1, len(records) - 1)


def round_order(modes: list, r: int) -> list:
    """Round r's running order: the first row of a Williams design (0, 1, n-1, 2, n-2, ...) with every
    index shifted by r. Over n rounds each mode runs once at every position, and because the gaps between
    neighbours in that row vary (1, -2, 3, ...), the mode that follows another (the baseline included)
    changes with the round: no mode always runs first or always right after the baseline."""
    n = len(modes)
    row = [0] + [(j + 1) // 2 if j % 2 else n - j // 2 for j in range(1, n)]
    return [modes[(i + r) % n] for i in row]


def median(values: list) -> float | None:
    """The median of the values that exist (a run with no warm decode step has no rate)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def paired_ratios(rates: list, base_rates: list) -> list:
    """Each round's mode rate over the same round's baseline rate: a round that ran slow for every
    mode (a busy CPU, lower clocks) moves both and so not the ratio."""
    return [a / b if a and b else None for a, b in zip(rates, base_rates)]


def summary(runs: list[dict], base_rates: list | None, batch: int) -> dict:
    """One cell from its runs (one a round): the median rate, its spread, the median paired ratio."""
    rates = [r["decode_tokens_per_s"] for r in runs]
    rate, present = median(rates), [x for x in rates if x is not None]
    ratios = paired_ratios(rates, base_rates) if base_rates else None
    return {"decode_tokens_per_s": rate, "step_ms": 1e3 * batch / rate if rate else None,
            "spread": (max(present) - min(present)) / rate if rate else None,
            "vs_baseline": median(ratios) if ratios else None, "repeats": len(runs),
            "decode_tokens_per_s_runs": rates, "vs_baseline_runs": ratios,
            "order_positions": [r["position"] for r in runs],
            "warmup_s": sum(r["warmup_s"] for r in runs), "prefill_s": median([r["prefill_s"] for r in runs]),
            "kv_tokens_held": runs[-1]["kv_tokens_held"]}


def rounds(lm, policies: dict, batch: int, prompt: int, grid: Grid) -> dict[str, list[dict]]:
    """Rounds of every mode once in round_order: each mode's runs, one a round. grid.repeats rounds, and more
    (up to grid.max_repeats) while a mode has decoded less than grid.min_decode_s over its runs: on the
    embedded model a 64-token run decodes for ~30 ms, which one slow stretch of the host moves by 20%
    (modes_quick_2026-12-01_host_cuts.json: spreads of 12-31% at batch 1 and 8 x 1k), where the large
    shapes' cells spread by 0-6%."""
    runs = {mode: [] for mode in policies}
    r = 0
    while r < grid.repeats or (r < grid.max_repeats and shortest_decode_s(runs, batch, grid) < grid.min_decode_s):
        for position, mode in enumerate(round_order(list(policies), r)):
            run = decode_run(lm, policies[mode], batch, prompt, grid.new_tokens, grid.reserve_kv)
            runs[mode].append({**run, "position": position})
        r += 1
    return runs


def shortest_decode_s(runs: dict[str, list[dict]], batch: int, grid: Grid) -> float:
    """The least time any mode has spent decoding over its runs so far (each run's tokens at its rate)."""
    return min(sum(grid.new_tokens * batch / run["decode_tokens_per_s"] for run in mode_runs
                   if run["decode_tokens_per_s"]) for mode_runs in runs.values())


def cells(lm, shape: str, policies: dict, grid: Grid) -> list[dict]:
    """Every batch x prompt x mode of one model: warm-up apart, then the interleaved rounds."""
    out = []
    for batch in grid.batches:
        warm = {mode: decode_run(lm, policy, batch, min(grid.prompts), grid.warmup_tokens, grid.reserve_kv)["warmup_s"]
                for mode, policy in policies.items()}
        for prompt in grid.prompts:
            runs = rounds(lm, policies, batch, prompt, grid)
            base = [r["decode_tokens_per_s"] for r in runs["baseline"]] if "baseline" in runs else None
            for mode, policy in policies.items():
                cell = {"shape": shape, "batch": batch, "prompt": prompt, "mode": mode,
                        **summary(runs[mode], base, batch)}
                cell["warmup_s"] += warm[mode]  # the warm-up run's and any the measured runs still did
                if batch == 1 and cell["step_ms"]:
                    cell.update(policy_time(lm, policy, prompt, grid.policy_tokens or grid.new_tokens, grid.reserve_kv))
                out.append(cell)
                print(f"{time.strftime('%H:%M:%S')} {shape} b{batch} p{prompt} {mode}: "
                      f"{cell['decode_tokens_per_s']:.1f} tok/s (spread {cell['spread']:.0%})", flush=True)
    return out


def table(cells_: list[dict]) -> str:
    """Medians over the rounds; spread is (max - min) / median of the rounds' tokens/s, x baseline the
    median of the paired ratios."""
    rows = ["| shape | batch | prompt | mode | decode tok/s | spread | x baseline | step ms | policy ms/step "
            "| policy share | KV tokens held (row 0) | warm-up s |", "|" + " --- |" * 12]
    for c in cells_:
        ratio = f"{c['vs_baseline']:.2f}" if c.get("vs_baseline") is not None else "-"
        pol = f"{c['policy_ms_per_step']:.3f}" if "policy_ms_per_step" in c else "-"
        share = f"{c['policy_share']:.1%}" if c.get("policy_share") is not None else "-"
        spread = f"{c['spread']:.1%}" if c.get("spread") is not None else "-"
        rows.append(f"| {c['shape']} | {c['batch']} | {c['prompt']} | {c['mode']} | {c['decode_tokens_per_s']:.1f} | "
                    f"{spread} | {ratio} | {c['step_ms']:.2f} | {pol} | {share} | {c['kv_tokens_held']} | "
                    f"{c['warmup_s']:.1f} |")
    return "\n".join(rows)


def run_grid(grid: Grid, out: Path, load=load_shape, name: str = "modes") -> dict:
    """The whole grid, one shape at a time (each loaded, measured and freed), written after each."""
    import tempfile

    scratch = Path(tempfile.mkdtemp())
    results = {"environment": harness.environment(), "grid": grid.__dict__, "cells": []}
    for shape in grid.shapes:
        lm = load(shape, max(grid.prompts) + grid.new_tokens)
        results["cells"] += cells(lm, shape, mode_policies(lm, grid.modes, shape, scratch), grid)
        harness.write(results, out, name, table(results["cells"]))
        del lm
    return results
