"""Where a RecurFormer decode step's time goes, on a CPU: the replaced groups' part against the rest.

    PYTHONPATH=. python3 benchmarks/recurformer_step_cpu.py SHAPE [LAYERS] [BATCH]

SHAPE is `embedded` (the shipped 25% adapter) or a harness shape with random weights and a random 25%
adapter (its first LAYERS layers, float32). Prints: the time to build the policy's modules (part of the
first request's warm-up), the prefill, the decode step of the baseline and of RecurFormer, the
replaced groups' stage (timed alone, every layer) and how many torch ops a decode step and that stage
launch (on a GPU each is about a kernel, inside or outside a CUDA graph). Times are minima over
repeats: on a shared CPU the least disturbed run is the truest; the op counts do not depend on load.
"""

import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
from pyramid_core import generate  # noqa: E402
from pyramid_core.bench import harness  # noqa: E402
from pyramid_core.engine import start_request, step  # noqa: E402
from pyramid_core.policies import RecurFormerPolicy  # noqa: E402


def load(shape: str, layers: int | None):
    if shape == "embedded":
        from pyramid_core.models import load_model

        return load_model("embedded", device="cpu", dtype="float32"), ""
    spec = dict(harness.SHAPES[shape])
    if layers:
        spec["num_hidden_layers"] = layers
    harness.SHAPES[f"{shape}-{layers}"] = spec
    lm = harness.random_model(f"{shape}-{layers}", dtype=torch.float32, device="cpu", max_positions=4096)
    return lm, harness.random_adapter(lm, 0.25, Path(tempfile.mkdtemp()) / "adapter")


def top_level_ops(prof) -> int:
    """aten ops called from Python, not from inside another aten op: on a GPU, roughly the kernels."""
    return len([e for e in prof.events() if e.name.startswith("aten::") and
                (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))])


def decode_step(lm, policy, ids, steps: int = 12) -> tuple[float, int]:
    """(ms of the fastest decode step: on a shared CPU the minimum is the least disturbed, torch ops
    of one decode step)."""
    records = generate(lm, ids, policy=policy, max_new_tokens=steps + 3, cuda_graphs=False)
    next(records), next(records)  # the prefill, and a first decode step that warms up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        next(records)
    times = [r.step_time_s for r in records]
    return 1e3 * min(times), top_level_ops(prof)


@torch.inference_mode()
def recurrent_stage(lm, policy, ids, repeats: int = 20):
    """(ms per decode step of every layer's replaced groups, torch ops they launch per step)."""
    req = start_request(lm, ids, torch.ones_like(ids), policy)
    step(req, ids)
    x = torch.randn(ids.shape[0], 1, lm.config.hidden_size)
    pos = req.positions[:, None]
    layers = [i for i, lh in enumerate(req.stages.heads) if lh is not None]

    def run():
        for idx in layers:
            req.stages.recurrent(idx, x, pos, req.cache.recurrent_state[idx], "decode")

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return 1e3 * min(times), top_level_ops(prof), len(layers)


def main():
    shape = sys.argv[1]
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else None
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    torch.manual_seed(0)
    lm, adapter = load(shape, layers)
    policy = RecurFormerPolicy(adapter=adapter)
    start = time.perf_counter()
    modules = policy.recurrent_modules(lm)
    build = time.perf_counter() - start
    groups = sum(len(g) for g in modules.values())
    ids = torch.randint(3, lm.config.vocab_size, (batch, 256), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    list(generate(lm, ids, policy=policy, max_new_tokens=1, cuda_graphs=False))
    prefill = time.perf_counter() - start
    (base, base_ops), (recur, recur_ops) = decode_step(lm, None, ids), decode_step(lm, policy, ids)
    stage_ms, ops, replaced_layers = recurrent_stage(lm, policy, ids)
    print(f"{shape} layers={lm.config.num_hidden_layers} batch={batch} threads={torch.get_num_threads()}: "
          f"{groups} replaced groups in {replaced_layers} layers; modules built in {build:.2f} s; "
          f"prefill (256 tokens) {prefill:.3f} s")
    print(f"decode step: baseline {base:.2f} ms ({base_ops} ops), recurformer {recur:.2f} ms ({recur_ops} ops, "
          f"{base / recur:.2f}x); replaced groups' stage {stage_ms:.2f} ms, {ops} torch ops per step")


if __name__ == "__main__":
    main()
