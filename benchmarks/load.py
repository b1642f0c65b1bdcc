"""Many users at once: waves of concurrent gradio_client sessions against app.py (a subprocess), each
session mixing generate, attention, recency and export, then closing. Reports per wave what every
call ended in (output, the busy message, or a failure), whether any hung, whether the server answers
afterwards, and the server's resident memory after the first request and after the sessions ended.

    python benchmarks/load.py --clients 20 50 --out benchmarks/load_embedded

writes load_embedded.json and load_embedded.md. tests/test_load.py runs `session` and `wave` on a
few clients in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

# studio.queue.BUSY ("The studio is busy: try again in a moment.") as the server says it, and as
# gradio_client words the same refusal
BUSY_WORDS = ("busy", "queue is full")
PROMPT = "Once upon a time, in a quiet town by the sea, there lived an old clockmaker who "
SETTLE_S = 30                 # after the last session closes: its heartbeat ends, unload runs, memory settles


def outcome(call) -> str:
    """'ok', 'busy' (the queue's message), or 'failed: <message>'."""
    try:
        call()
        return "ok"
    except Exception as err:  # the client raises whatever the server said: classify it
        text = str(err)
        return "busy" if any(w in text.lower() for w in BUSY_WORDS) else "failed: " + text[:160]


def session(url: str, i: int, max_new_tokens: int = 32, model: str = "embedded") -> list[str]:
    """One user: generate, redraw the attention, recency scores, export; then the page closes."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    prompt = f"{PROMPT * (1 + i % 3)}(user {i})"
    try:
        generated = outcome(lambda: client.predict(model_id=model, prompt=prompt,
                                                   modes=["baseline", "pyramid", "streaming"],
                                                   max_new_tokens=max_new_tokens, api_name="/generate"))
        return [
            generated,
            outcome(lambda: client.predict("pyramid", "prefill", 1, "mean over heads", api_name="/attention")),
            outcome(lambda: client.predict(model, prompt, "", api_name="/recency")),
            # a run turned away as busy has nothing to export: the user would be told so, as asked
            outcome(lambda: client.predict(api_name="/export")) if generated == "ok" else generated,
        ]
    finally:
        client.close()


def wave(url: str, clients: int, limit_s: float, max_new_tokens: int = 32, model: str = "embedded") -> dict:
    """clients sessions at once; counts of each outcome, sessions still running at limit_s, seconds."""
    results: dict[int, list[str]] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, session(url, i, max_new_tokens, model)),
                                daemon=True) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, limit_s - (time.monotonic() - start)))
    calls = [c for r in results.values() for c in r]
    failed = [c for c in calls if c.startswith("failed")]
    return {"clients": clients, "seconds": round(time.monotonic() - start, 1), "calls": len(calls),
            "ok": calls.count("ok"), "busy": calls.count("busy"), "failed": len(failed),
            "failures": failed[:5], "hung": sum(t.is_alive() for t in threads)}


def served(url: str, model: str = "embedded") -> bool:
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        return outcome(lambda: client.predict(model_id=model, prompt="Hello again.", modes=["baseline"],
                                              max_new_tokens=4, api_name="/generate")) == "ok"
    finally:
        client.close()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def start_app(port: int) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False")
    app = subprocess.Popen([sys.executable, "app.py"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(180):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                return app
        except OSError:
            time.sleep(1)
    os.killpg(app.pid, signal.SIGTERM)
    raise SystemExit("app.py did not answer within 180 s")


def versions() -> dict:
    import gradio, gradio_client, torch, transformers  # noqa: E401 (the server's own versions)

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "gradio": gradio.__version__,
            "gradio_client": gradio_client.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--limit-s", type=float, default=540)
    parser.add_argument("--port", type=int, default=7881)
    parser.add_argument("--out", default="benchmarks/load_embedded")
    args = parser.parse_args()
    app, url = start_app(args.port), f"http://127.0.0.1:{args.port}/"
    try:
        assert served(url), "the first request failed"
        time.sleep(2)
        first = rss_mb(app.pid)
        waves = []
        for n in args.clients:
            result = wave(url, n, args.limit_s, args.max_new_tokens)
            result["served_after"] = served(url)
            time.sleep(SETTLE_S)
            result["rss_after_mb"] = round(rss_mb(app.pid), 1)
            result["rss_ratio"] = round(result["rss_after_mb"] / first, 3)
            waves.append(result)
            print(json.dumps(result))
    finally:
        os.killpg(app.pid, signal.SIGTERM)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "versions": versions(), "max_new_tokens": args.max_new_tokens,
              "rss_after_first_request_mb": round(first, 1), "waves": waves}
    Path(args.out + ".json").write_text(json.dumps(report, indent=1) + "\n")
    Path(args.out + ".md").write_text(markdown(report))


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()}


def markdown(report: dict) -> str:
    lines = [f"# Load: concurrent sessions against app.py ({report['date']})", "",
             f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs. "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", "",
             "Each session: generate (baseline, pyramid, streaming; "
             f"{report['max_new_tokens']} new tokens), attention, recency, export; then it closes.", "",
             f"Resident memory after the first request: {report['rss_after_first_request_mb']} MB.", "",
             "| clients | calls | ok | busy | failed | hung | seconds | served after | RSS after (MB) | ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for w in report["waves"]:
        lines.append(f"| {w['clients']} | {w['calls']} | {w['ok']} | {w['busy']} | {w['failed']} | {w['hung']} "
                     f"| {w['seconds']} | {w['served_after']} | {w['rss_after_mb']} | {w['rss_ratio']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
