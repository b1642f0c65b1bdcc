"""What the app costs on top of the CLI: the same modes, prompt and settings, timed three ways.

- cli:    session.run_generation per mode, one after the other (what `python -m pyramid_core generate`
          does after loading; no attention or positions recorded, no figures);
- app:    app.generate_run called as a plain generator (panes every app.TEXT_EVERY_S, figures every
          app.PLOTS_EVERY_S or less often, with attention and positions recorded on those steps);
- server: the same through a local Gradio server and gradio_client (adds serialisation and transport).

The model is loaded once and shared, so loading is not timed. Prints one JSON object with wall
seconds per path and the ratios to the CLI. Default model: a tiny random checkpoint (CPU); pass
--model embedded (or a hub id / directory) for real numbers.

    python benchmarks/app_overhead.py [--model embedded] [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from pyramid_core.engine import Sampling  # noqa: E402
from pyramid_core.session import run_generation  # noqa: E402

PROMPT = ("The lighthouse on Gull Point was kept by the Marrow family for forty-one years, and every "
          "evening the keeper wrote the time the lamp was lit and the ships that passed. ") * 3


def tiny_checkpoint() -> str:
    from transformers import GenerationConfig

    from tests.tiny_models import save_tiny_checkpoint

    path = save_tiny_checkpoint(tempfile.mkdtemp(prefix="tiny-llama-"))
    config = GenerationConfig.from_pretrained(path)
    config.eos_token_id = None  # run every mode to the token limit, so each path does the same work
    config.save_pretrained(path)
    return str(path)


def time_cli(model: str, modes: list[str], new_tokens: int) -> float:
    lm = app.get_model(model)
    policies = app.build_policies(modes, 0.0, [None] * len(app.KNOBS))
    start = time.perf_counter()
    for policy in policies.values():
        run_generation(lm, PROMPT, policy, new_tokens, Sampling())
    return time.perf_counter() - start


def handler_args(model: str, modes: list[str], new_tokens: int) -> list:
    return [model, modes, 0.0, 0.0, 1.0, 0, new_tokens, PROMPT, modes[0], app.STEP_CHOICES[0], 0,
            app.MEAN_HEAD, *[None] * len(app.KNOBS)]


def time_app(model: str, modes: list[str], new_tokens: int) -> float:
    start = time.perf_counter()
    for _ in app.generate_run(None, *handler_args(model, modes, new_tokens)):
        pass
    return time.perf_counter() - start


def time_server(client, model: str, modes: list[str], new_tokens: int) -> float:
    start = time.perf_counter()
    client.submit(*handler_args(model, modes, new_tokens), api_name="/generate").result(timeout=600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: a tiny random checkpoint")
    parser.add_argument("--modes", default=",".join(app.AVAILABLE))
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = args.model or tiny_checkpoint()
    modes = args.modes.split(",")

    from gradio_client import Client

    demo = app.build_ui()
    demo.queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    try:
        time_cli(model, modes, 4), time_app(model, modes, 4)  # warm up: load the model, first kernels
        times = {"cli": [], "app": [], "server": []}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits every path alike
            times["cli"].append(time_cli(model, modes, args.new_tokens))
            times["app"].append(time_app(model, modes, args.new_tokens))
            times["server"].append(time_server(client, model, modes, args.new_tokens))
    finally:
        demo.close()
    median = {k: statistics.median(v) for k, v in times.items()}
    lm = app.get_model(model)
    print(json.dumps({
        "model": lm.name if args.model else "tiny random llama (4 layers, hidden 64)",
        "device": str(lm.device), "dtype": str(lm.dtype), "machine": platform.processor() or platform.machine(),
        "modes": modes, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "median_s": {k: round(v, 3) for k, v in median.items()},
        "app_over_cli": round(median["app"] / median["cli"], 2),
        "server_over_cli": round(median["server"] / median["cli"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
