"""What generating in a process of its own would cost: the CLI's generation timed alone, and while the
app's server streams the same updates to a client from another process.

A worker-process design would leave the server only building and sending the panes and figures from
records the worker reports. This replays that: the app's handler runs as usual, but its `generate_into`
feeds Live a recorded run's records at the pace of a real run instead of generating, so the server
builds and sends what it would (panes every TEXT_EVERY_S, figures every PLOTS_EVERY_S: studio/live.py) while the
CLI generates in its own process beside it. The CLI's time with the replay over its time alone is the
slowdown such a design would leave, before the cost of passing records between processes.

    python benchmarks/worker_estimate.py [--repeats 16] [--new-tokens 128] [--out F]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from app_overhead import PROMPT, ClientProcess, CliProcess, handler_args, median_interval, serve_locally  # noqa: E402
from pyramid_core.compare import compare  # noqa: E402
from pyramid_core.engine import Sampling  # noqa: E402
from studio import stream  # noqa: E402
from studio.knobs import build_policies  # noqa: E402
from studio.model_cache import get_model  # noqa: E402
from studio.modes import MODES  # noqa: E402

DETAIL_EVERY = 25


def recorded_run(modes: list[str], new_tokens: int) -> list:
    """(mode, record) pairs of one run, with attention and positions every DETAIL_EVERY steps (a live run
    records them about as often; Live keeps them only on the newest records): the replay's source."""
    policies = build_policies(modes, 0.0, {})
    detail = lambda mode, step: step % DETAIL_EVERY == 0  # noqa: E731
    return list(compare(get_model("embedded"), PROMPT, policies, new_tokens, Sampling(),
                        record_attention=detail, record_positions=detail))


class Replay:
    """stream.generate_into replaced: each run's Live gets the recorded records, one every `pace` seconds."""

    def __init__(self, recorded: list, pace: float):
        self.recorded, self.pace = recorded, pace
        self.generate_into = stream.generate_into
        stream.generate_into = self.replay

    def replay(self, records, live) -> None:
        records.close()
        for mode, record in self.recorded:
            time.sleep(self.pace)
            live.add(mode, record)

    def restore(self) -> None:
        stream.generate_into = self.generate_into


def cli_with_replay(cli: CliProcess, client: ClientProcess, modes: list[str], new_tokens: int) -> float:
    """The CLI's wall seconds while the client receives a replayed run from the server."""
    streaming = threading.Thread(target=client.generate, args=(handler_args("embedded", modes, new_tokens),))
    streaming.start()
    time.sleep(0.2)  # the stream is under way
    wall = cli.time(new_tokens).wall
    streaming.join()
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    modes = list(MODES)
    recorded = recorded_run(modes, args.new_tokens)
    cli = CliProcess("embedded", modes, None)
    alone = cli.time(args.new_tokens).wall  # warm up, and the replay's pace: a record per CLI step
    replay = Replay(recorded, pace=1.1 * alone / len(recorded))  # outlasts the CLI's run
    demo, url = serve_locally()
    client = ClientProcess(url)
    try:
        paths = {"cli": lambda: cli.time(args.new_tokens).wall,
                 "cli_with_replay": lambda: cli_with_replay(cli, client, modes, args.new_tokens)}
        paths["cli_with_replay"]()
        runs = {name: [] for name in paths}
        order = random.Random(0)
        for _ in range(args.repeats):
            for name in order.sample(list(paths), len(paths)):
                runs[name].append(paths[name]())
                time.sleep(0.5)  # a replay still streaming ends before the next path starts
    finally:
        replay.restore()
        client.close()
        cli.close()
        demo.close()
    ratios = [a / b for a, b in zip(runs["cli_with_replay"], runs["cli"])]
    result = {"modes": modes, "new_tokens": args.new_tokens, "repeats": args.repeats,
              "replayed_records": len(recorded), "pace_s": round(replay.pace, 5),
              "with_replay_over_alone_paired": round(statistics.median(ratios), 3),
              "with_replay_over_alone_paired_90ci": median_interval(ratios),
              "seconds": {k: [round(x, 3) for x in v] for k, v in runs.items()}}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
