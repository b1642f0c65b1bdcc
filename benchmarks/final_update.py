"""What the studio's final update costs to build (issue 18 part 8): the update after a run's last token,
with every figure, each pane's numbers, the summary table and the run's state, made on the handler's
thread while the user waits for the last of the page.

`--runs` runs of every mode on the long sample prompt (the one benchmarks/app_gpu.py sends, ~3,300
tokens) through app.generate_run (no server): the final update as each run built it (`in_run_ms`: what a
user waits for, a run's first figures of its last step), then the last run's built again `--repeats` times
on the same stored records (`rebuilt_ms`: the median and the fastest). Run it on two versions of the code,
same machine, to compare them. The heap is settled first, as the server settles it (studio/heap.py).
Until 2026-12-01 this used app_overhead's short prompt (~100 tokens): its ~15 ms were a third of what the
server's long prompt costs, hence "38-71 ms in the server against ~21 bare".

    PYTHONPATH=. python3 benchmarks/final_update.py [--new-tokens 128] [--runs 3] [--repeats 20] [--out F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import app  # noqa: E402
import benchmarks.app_overhead as overhead  # noqa: E402
from benchmarks.app_gpu import PROMPT  # noqa: E402
from benchmarks.app_overhead import handler_args  # noqa: E402
from studio import heap, live as live_view  # noqa: E402
from studio.modes import MODES  # noqa: E402


def finished_live(model: str, new_tokens: int, in_run_s: list[float]) -> live_view.Live:
    """The live view of one run of every mode, as its final update found it; that update's seconds are
    appended to in_run_s."""
    kept = []
    outputs = live_view.Live.outputs

    def keep(live, final=False):
        start = time.perf_counter()
        out = outputs(live, final)
        if final:
            in_run_s.append(time.perf_counter() - start)
            kept.append(live)
        return out

    live_view.Live.outputs = keep
    try:
        for _ in app.generate_run(None, *handler_args(model, list(MODES), new_tokens)):
            pass
    finally:
        live_view.Live.outputs = outputs
    return kept[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    overhead.PROMPT = PROMPT  # handler_args reads it
    heap.settle()  # as the server does once its page is built (the collector's settings included)
    in_run = []
    for _ in range(args.runs):
        live = finished_live(args.model, args.new_tokens, in_run)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        live.outputs(final=True)
        seconds.append(time.perf_counter() - start)
    result = {"model": args.model, "modes": list(MODES), "new_tokens": args.new_tokens, "prompt_chars": len(PROMPT),
              "runs": args.runs, "repeats": args.repeats, "records": {m: len(r) for m, r in live.runs.items()},
              "in_run_ms": [round(1000 * s, 1) for s in in_run],
              "rebuilt_ms": {"median": round(1000 * statistics.median(seconds), 1),
                             "fastest": round(1000 * min(seconds), 1)}}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
