"""How soon the studio's queue has a request that a browser posts (issue 18 part 8): a local server, and
the two calls a page makes, POST /queue/join and then the event stream, sent with plain httpx; the time
from the POST's start to Gradio's Queue.push taking the request in, and to the POST's answer.
gradio_client's submit takes ~20 ms to get there (benchmarks/app_gpu.md), a browser's POST does not.

    PYTHONPATH=. python3 benchmarks/queue_join.py [--requests 5] [--out F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import app_gpu, app_overhead  # noqa: E402
from benchmarks.app_overhead import handler_args, serve_locally  # noqa: E402
from benchmarks.update_payload import join, messages  # noqa: E402


def one_request(http: httpx.Client, url: str, fn_index: int, data: list) -> tuple[float, float]:
    """(seconds to the push, seconds to the POST's answer) of one short run, read to its end."""
    start = time.time()
    session = join(http, url, fn_index, data)
    answered = time.time()
    for _ in messages(http, url, session):
        pass
    return app_gpu.PUSHES[-1] - start, answered - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    app_gpu.stamp_pushes()
    app_overhead.PROMPT = app_gpu.PROMPT
    demo, url = serve_locally()
    fn_index = next(i for i, f in demo.fns.items() if f.api_name == "generate")
    data = handler_args("embedded", ["baseline"], 2)
    with httpx.Client(timeout=600) as http:
        times = [one_request(http, url, fn_index, data) for _ in range(args.requests)]
    demo.close()
    result = {"requests": args.requests, "run": "embedded, baseline, 2 new tokens, the long sample prompt",
              "post_to_push_ms": [round(1000 * p, 1) for p, _ in times],
              "post_answered_ms": [round(1000 * a, 1) for _, a in times],
              "median_post_to_push_ms": round(1000 * statistics.median(p for p, _ in times), 1)}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
