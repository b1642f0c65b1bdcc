"""What an idle Gradio server costs the generation that shares its process (CPU, embedded model).

The same library generation (app_overhead.time_cli: every mode, one after the other) is timed in fresh
processes that alternate between hosting nothing else and hosting the app's Gradio server, launched
and idle. The difference is the price of the server's threads (event loop, queue, workers) to a
Python-heavy decode loop on a small CPU, before the app draws or sends anything.

    python benchmarks/idle_server_cost.py [--rounds 4] [--runs 3] [--threads 1] [--out F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def child(with_server: bool, runs: int, threads: int) -> list[list[float]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import torch

    torch.set_num_threads(threads)
    import app_overhead
    from studio.modes import MODES

    modes = list(MODES)
    if with_server:
        app_overhead.serve_locally()
        time.sleep(3)  # past the launch's one-off work (version check, analytics)
    lm = app_overhead.cli_model("embedded")
    app_overhead.time_cli(lm, modes, 4)
    clocks = [app_overhead.time_cli(lm, modes, 128) for _ in range(runs)]
    return [[c.wall, c.cpu] for c in clocks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", choices=["none", "server"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "server", args.runs, args.threads)))
        return
    times = {"none": [], "server": []}
    for _ in range(args.rounds):  # alternating, so drift in machine load hits both alike
        for kind in times:
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--runs", str(args.runs),
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            times[kind] += json.loads(out.stdout.strip().splitlines()[-1])
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    result = {"threads": args.threads, "rounds": args.rounds, "runs": args.runs, "seconds_wall_cpu": times,
              "median_wall_s": wall, "server_over_none": round(wall["server"] / wall["none"], 3)}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
