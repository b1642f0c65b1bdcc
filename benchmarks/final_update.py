"""What the studio's final update costs to build (issue 18 part 8): the update after a run's last token,
with every figure, each pane's numbers, the summary table and the run's state, made on the handler's
thread while the user waits for the last of the page.

One run of every mode on the long sample prompt through app.generate_run (no server); its live view is
kept, and its final update is built again `--repeats` times: the median and the fastest. The same stored
records each time, so two versions of the code compare on equal input (run it on each, same machine).

    PYTHONPATH=. python3 benchmarks/final_update.py [--new-tokens 128] [--repeats 20] [--out F]
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
from benchmarks.app_overhead import handler_args  # noqa: E402
from studio import live as live_view  # noqa: E402
from studio.modes import MODES  # noqa: E402


def finished_live(model: str, new_tokens: int) -> live_view.Live:
    """The live view of one run of every mode, as its final update found it."""
    kept = []
    outputs = live_view.Live.outputs

    def keep(live, final=False):
        if final:
            kept.append(live)
        return outputs(live, final)

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
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    live = finished_live(args.model, args.new_tokens)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        live.outputs(final=True)
        seconds.append(time.perf_counter() - start)
    result = {"model": args.model, "modes": list(MODES), "new_tokens": args.new_tokens, "repeats": args.repeats,
              "records": {m: len(r) for m, r in live.runs.items()},
              "final_update_ms": {"median": round(1000 * statistics.median(seconds), 1),
                                  "fastest": round(1000 * min(seconds), 1)}}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
