"""What other threads' torch ops cost the thread that generates (why app.py runs torch on one thread).

libgomp gives every thread that runs a parallel op a team of its own and, once it manages more threads
than there are CPUs, stops idle workers spinning between parallel regions. This times the same CLI
generation (every mode, embedded model) on this thread before and after `--others` other threads have
each run a few matrix products and then gone idle (they stay alive, as a server's pool threads do).
Each phase reports the fastest of `--repeats` runs (noise on a shared machine only adds time).

    python benchmarks/omp_teams.py [--new-tokens 48] [--repeats 5] [--others 2] [--out F]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyramid_core.engine import Sampling  # noqa: E402
from pyramid_core.models import load_model  # noqa: E402
from pyramid_core.policies.registry import make_policy  # noqa: E402
from pyramid_core.pipeline import run_generation  # noqa: E402

MODES = ("baseline", "pyramid", "streaming", "recurformer", "pyramid+recurformer")
PROMPT = "The keeper wrote the time the lamp was lit and the ships that passed. " * 8


def fastest(lm, new_tokens: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for mode in MODES:
            run_generation(lm, PROMPT, make_policy(mode, {}), new_tokens, Sampling())
        times.append(time.perf_counter() - start)
    return min(times)


def idle_thread_that_ran_torch(release: threading.Event) -> threading.Thread:
    def work():
        a = torch.randn(256, 256)
        for _ in range(20):
            a = (a @ a).tanh()
        release.wait()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--others", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lm = load_model("embedded", device="cpu")
    fastest(lm, 4, 1)  # warm up
    alone = fastest(lm, args.new_tokens, args.repeats)
    release = threading.Event()
    others = [idle_thread_that_ran_torch(release) for _ in range(args.others)]
    time.sleep(0.5)
    after = fastest(lm, args.new_tokens, args.repeats)
    release.set()
    for thread in others:
        thread.join()
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "new_tokens": args.new_tokens, "repeats": args.repeats,
              "other_threads": args.others, "fastest_s_alone": round(alone, 3),
              "fastest_s_after_others": round(after, 3), "ratio": round(after / alone, 3)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
