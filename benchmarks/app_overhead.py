"""What the app costs on top of the CLI: the same modes, prompt and settings, timed four ways.

- cli:        session.run_generation per mode, one after the other (what `python -m pyramid_core
              generate` does after loading; no attention or positions recorded, no figures), in a
              process of its own with no Gradio server in it;
- cli_in_app: the same, in the app's process on its torch thread (a control: what the process and
              thread alone change);
- app:        app.generate_run called as a plain generator (panes every TEXT_EVERY_S, figures every
              PLOTS_EVERY_S (studio/live.py) or less often, with attention and positions recorded on those steps);
- server:     the same through a local Gradio server, driven by gradio_client from a separate process,
              as a browser would (adds the server's serialisation and transport; the client's decoding
              of the stream is the browser's work and is not in this process's CPU seconds);
- server_figures_off (only with --paths): the server with the live figures off (panes stream, figures
              and their detail steps only at the prefill and the end): what the figures cost.

Models are loaded once per process, so loading is not timed. Prints one JSON object with wall and CPU
seconds per path and the ratios to the CLI: of the medians, and the median of each repeat's ratio (the
paths of one repeat run back to back, in a shuffled order, so that ratio sees one machine load), with a
bootstrap 90% interval for that median. CPU seconds count every thread of the process that generates
(for app and server, the Gradio server's threads included).

Other tenants move a run of a few seconds by more than the effect measured, so the app and server paths
also time, within each run, the generation itself (`stream.generate_into` on the torch thread, detail recording
included): `over_own_generation` is the run's wall time over that, i.e. what the app adds around the
same generation, measured against the same machine load.

    python benchmarks/app_overhead.py [--model embedded] [--new-tokens 128] [--repeats 9] [--threads N]
        [--paths cli,cli_in_app,app,server] [--out F]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from pyramid_core.engine import Sampling  # noqa: E402
from pyramid_core.models import default_device, load_model  # noqa: E402
from pyramid_core.pipeline import run_generation  # noqa: E402
from studio import live as live_view, stream  # noqa: E402
from studio.figures import MEAN_HEAD, STEP_CHOICES  # noqa: E402
from studio.knobs import build_policies  # noqa: E402
from studio.model_cache import get_model  # noqa: E402
from studio.modes import MODES  # noqa: E402
from studio.request import form_names  # noqa: E402
from studio.torch_thread import on_torch_thread  # noqa: E402

PROMPT = ("The lighthouse on Gull Point was kept by the Marrow family for forty-one years, and every "
          "evening the keeper wrote the time the lamp was lit and the ships that passed. ") * 3


class Clock:
    """Wall seconds and this process's CPU seconds (all threads: the server's too) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


@functools.cache
def cli_model(model: str):
    """The model as the CLI loads it: here, on this thread (studio's get_model would load it on the app's
    torch thread, and a second thread running torch ops slows this one's: studio/torch_thread.py)."""
    return load_model(model, device=default_device(), dtype="auto")


def time_cli(lm, modes: list[str], new_tokens: int) -> Clock:
    policies = build_policies(modes, {})
    with Clock() as clock:
        for policy in policies.values():
            run_generation(lm, PROMPT, policy, new_tokens, Sampling())
    return clock


class CliProcess:
    """The CLI path in a process of its own, as the CLI runs: no Gradio server threads beside it."""

    def __init__(self, model: str, modes: list[str], threads: int | None):
        command = [sys.executable, __file__, "--cli-worker", "--model", model, "--modes", ",".join(modes)]
        self.proc = subprocess.Popen(command + (["--threads", str(threads)] if threads else []),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def time(self, new_tokens: int) -> Clock:
        self.proc.stdin.write(f"{new_tokens}\n")
        self.proc.stdin.flush()
        clock = Clock()
        clock.wall, clock.cpu = json.loads(self.proc.stdout.readline())
        return clock

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def cli_worker(model: str, modes: list[str]) -> None:
    """Time time_cli for each new-token count read from stdin; answer [wall, cpu] on stdout."""
    for line in sys.stdin:
        clock = time_cli(cli_model(model), modes, int(line))
        print(json.dumps([clock.wall, clock.cpu]), flush=True)


def handler_args(model: str, modes: list[str], new_tokens: int) -> list:
    form = dict(model_id=model, modes=modes, budget=0.0, temperature=0.0, top_p=1.0, seed=0, max_new_tokens=new_tokens,
                prompt=PROMPT, attn_mode=modes[0], attn_step=STEP_CHOICES[0], layer=0, head=MEAN_HEAD)
    return [form.get(name) for name in form_names()]  # knobs None: their defaults


class GenerationTimer:
    """Wall seconds spent inside stream.generate_into (the generation, on the torch thread), summed."""

    def __init__(self):
        self.seconds = 0.0
        self.began = self.ended = None  # wall clock of the first generation's start and the last one's end
        self.generate_into = stream.generate_into
        stream.generate_into = self.timed  # generate_run looks the name up at each call

    def timed(self, records, live):
        start = time.perf_counter()
        self.began = self.began or time.time()  # wall clock, as the probe's other stamps
        try:
            return self.generate_into(records, live)
        finally:
            self.seconds += time.perf_counter() - start
            self.ended = time.time()

    def restore(self) -> None:
        stream.generate_into = self.generate_into


def generation_timed(run):
    """run() -> Clock, with .generating: the seconds of it that stream.generate_into took."""
    timer = GenerationTimer()
    try:
        clock = run()
    finally:
        timer.restore()
    clock.generating = timer.seconds
    return clock


def time_app(model: str, modes: list[str], new_tokens: int) -> Clock:
    with Clock() as clock:
        for _ in app.generate_run(None, *handler_args(model, modes, new_tokens)):
            pass
    return clock


CLIENT_LOOP = """
import json, sys
from gradio_client import Client
client = Client(sys.argv[1], verbose=False)
print("ready", flush=True)
for line in sys.stdin:
    client.submit(*json.loads(line), api_name="/generate").result(timeout=600)
    print("done", flush=True)
"""


class ClientProcess:
    """A gradio_client in its own process (a browser's place), generating when told on stdin."""

    def __init__(self, url: str):
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT_LOOP, url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", "the client process did not start"

    def generate(self, args: list) -> None:
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done", "the client process failed"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def time_server(client: ClientProcess, model: str, modes: list[str], new_tokens: int) -> Clock:
    with Clock() as clock:
        client.generate(handler_args(model, modes, new_tokens))
    return clock


def time_server_figures_off(client: ClientProcess, model: str, modes: list[str], new_tokens: int) -> Clock:
    every = live_view.PLOTS_EVERY_S
    live_view.PLOTS_EVERY_S = float("inf")  # Live reads it when a run starts
    try:
        return time_server(client, model, modes, new_tokens)
    finally:
        live_view.PLOTS_EVERY_S = every


def serve_locally():
    """The app's Blocks, queued and launched on a free local port, without blocking: (demo, url)."""
    demo = app.build_ui()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="embedded (default), a hub id or a directory")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--paths", default="cli,cli_in_app,app,server",
                        help="which to time, cli first (also: server_figures_off)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--cli-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = args.model
    modes = args.modes.split(",")
    if args.cli_worker:
        return cli_worker(model, modes)

    demo, url = serve_locally()
    client = ClientProcess(url)
    cli = CliProcess(model, modes, args.threads)
    try:
        timed = {"cli": lambda: cli.time(args.new_tokens),
                 "cli_in_app": lambda: on_torch_thread(time_cli, get_model(model), modes, args.new_tokens),
                 "app": lambda: generation_timed(lambda: time_app(model, modes, args.new_tokens)),
                 "server": lambda: generation_timed(lambda: time_server(client, model, modes, args.new_tokens)),
                 "server_figures_off": lambda: generation_timed(
                     lambda: time_server_figures_off(client, model, modes, args.new_tokens))}
        paths = {name: timed[name] for name in args.paths.split(",")}
        assert next(iter(paths)) == "cli", "the CLI path comes first: every ratio is to it"
        for path in paths.values():  # warm up: load, first kernels
            path()
        runs = {name: [] for name in paths}
        order = random.Random(0)
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits every path alike,
            for name in order.sample(list(paths), len(paths)):  # and in a new order each time
                runs[name].append(paths[name]())
    finally:
        client.close()
        cli.close()
        demo.close()
    lm = get_model(model)
    result = {
        "model": lm.name,
        "device": str(lm.device), "dtype": str(lm.dtype), "machine": platform.processor() or platform.machine(),
        "modes": modes, "new_tokens": args.new_tokens, "repeats": args.repeats, "threads": torch_threads(),
    }
    for kind in ("wall", "cpu"):
        result[kind] = ratios_to_cli({k: [getattr(c, kind) for c in v] for k, v in runs.items()})
    result["over_own_generation"] = {
        k: {"median": round(statistics.median(c.wall / c.generating for c in v), 3),
            "90ci": median_interval([c.wall / c.generating for c in v]),
            "generating_s": [round(c.generating, 3) for c in v]}
        for k, v in runs.items() if hasattr(v[0], "generating")}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def ratios_to_cli(times: dict[str, list[float]]) -> dict:
    """Every path against the CLI: the ratio of the medians, and the median of each repeat's ratio (its
    paths ran back to back, so they saw one machine load) with its 90% interval; against the CLI's
    loop in the app's process too, where that ran."""
    median = {k: statistics.median(v) for k, v in times.items()}
    out = {"median_s": {k: round(v, 3) for k, v in median.items()}}
    for k in times:
        if k == "cli":
            continue
        ratios = [a / c for a, c in zip(times[k], times["cli"])]
        out[f"{k}_over_cli"] = round(median[k] / median["cli"], 3)
        out[f"{k}_over_cli_paired"] = round(statistics.median(ratios), 3)
        out[f"{k}_over_cli_paired_90ci"] = median_interval(ratios)
        if "cli_in_app" in times and k != "cli_in_app":
            out[f"{k}_over_cli_in_app_paired"] = paired_median(times[k], times["cli_in_app"])
    out["seconds"] = {k: [round(x, 3) for x in v] for k, v in times.items()}
    return out


def paired_median(times: list[float], baseline: list[float]) -> list[float]:
    """The median of the paired ratios, then its 90% interval."""
    ratios = [a / b for a, b in zip(times, baseline)]
    return [round(statistics.median(ratios), 3), *median_interval(ratios)]


def median_interval(values: list[float], confidence: float = 0.9, resamples: int = 10_000) -> list[float]:
    """A bootstrap interval for the median of `values` (percentiles of resampled medians): how far the
    median of this many repeats can be trusted on a machine whose load moves single runs by 30%."""
    draw = random.Random(1)
    medians = sorted(statistics.median(draw.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return [round(medians[int(tail * resamples)], 3), round(medians[int((1 - tail) * resamples) - 1], 3)]


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
