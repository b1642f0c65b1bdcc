"""The prefill's time per mode on this CPU: the embedded model, one 3000-token prompt of random ids.

    PYTHONPATH=. python3 benchmarks/prefill_cpu.py [tokens] [rounds]

H2O's prefill scores every prompt token's attention over the prompt (every query votes), PyramidInfer's
its recent window's; the others compute no scores (benchmarks/prefill_cpu.md).
"""

import sys

import torch

sys.path.insert(0, ".")
from pyramid_core import generate  # noqa: E402
from pyramid_core.models import load_model  # noqa: E402
from pyramid_core.policies.registry import make_policy  # noqa: E402
from pyramid_core.resources import asset  # noqa: E402

tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(2)
lm = load_model(str(asset("embedded")), device="cpu", dtype="float32")
ids = torch.randint(3, 1000, (1, tokens), generator=torch.Generator().manual_seed(0))
for r in range(rounds):
    for mode in ("baseline", "h2o", "snapkv", "pyramid"):
        record = next(iter(generate(lm, ids, policy=make_policy(mode, {}), max_new_tokens=1)))
        print(f"round {r}: {mode} prefill {record.step_time_s:.2f} s", flush=True)
