"""Where PyramidInfer's decode-time policy time goes at batch 1: its decode() spans (TimedPolicy, CUDA events)
summed per step that asked it, for two identical runs in one process. A step that costs far more in the
first run than in the second pays a one-time cost (kernel compilation, cuBLAS plans) there, warm-up rather
than the policy's per-step price.

    PYTHONPATH=. python benchmarks/policy_spans.py [shape] [prompt] [new_tokens] > spans.txt
"""

import sys

import torch

from pyramid_core.bench import harness
from pyramid_core.bench.modes import prompts
from pyramid_core.bench.overhead import TimedPolicy, span_seconds
from pyramid_core.engine import generate
from pyramid_core.policies.registry import make_policy


def timed_run(lm, prompt: int, new_tokens: int) -> list[float]:
    """Per decode() call, its milliseconds on the GPU's timeline."""
    timed = TimedPolicy(make_policy("pyramid", {}))
    for _ in generate(lm, prompts(lm, 1, prompt), policy=timed, max_new_tokens=new_tokens, reserve_kv=True):
        pass
    torch.cuda.synchronize()
    return [1e3 * span_seconds(s) for s in timed.spans["decode"]]


def main(shape="llama2-7b", prompt=1024, new_tokens=400):
    lm = harness.random_model(shape, dtype=torch.bfloat16)
    layers = lm.config.num_hidden_layers
    harness.warm_up(lm, [make_policy("pyramid", {})], reserve_kv=True)
    for run in (1, 2):
        spans = timed_run(lm, int(prompt), int(new_tokens))
        steps = [spans[i:i + layers] for i in range(0, len(spans), layers)]
        print(f"run {run}: {len(spans)} decode() calls, {sum(spans):.1f} ms in all")
        for i, step in enumerate(steps):
            top = max(step)
            print(f"  asking step {i}: {sum(step):8.2f} ms, largest call {top:7.2f} ms (layer {step.index(top)})")


if __name__ == "__main__":
    main(*sys.argv[1:])
