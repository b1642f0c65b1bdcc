"""What each streamed update of the app weighs on the wire (issue 18 part 8): a local server, one run of
every mode on the long sample prompt, read straight from the queue's event stream (the bytes a browser
gets), broken down by output: which component carries how many bytes in each message.

    PYTHONPATH=. python3 benchmarks/update_payload.py [--model embedded] [--new-tokens 16] [--out F]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import app_overhead  # noqa: E402
from benchmarks.app_overhead import handler_args, serve_locally  # noqa: E402
from benchmarks.app_gpu import PROMPT  # noqa: E402  the long sample prompt (~3000 tokens)
from studio.modes import MODES  # noqa: E402


def output_names(demo, fn) -> list[str]:
    """A readable name per output of the generate event: the component's label, elem_id or type."""
    names = []
    for block in fn.outputs:
        name = getattr(block, "label", None) or getattr(block, "elem_id", None) or type(block).__name__
        names.append(f"{len(names)}:{name}")
    return names


def join(http: httpx.Client, url: str, fn_index: int, data: list) -> str:
    """Queue one run as a page does (POST /queue/join); its session hash."""
    session = uuid.uuid4().hex
    http.post(f"{url}gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                   "event_data": None, "trigger_id": None}).raise_for_status()
    return session


def messages(http: httpx.Client, url: str, session: str):
    """The session's queue messages up to its run's end, as (raw bytes, parsed message)."""
    with http.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            yield len(line.encode()), message
            if message.get("msg") == "process_completed":
                return


def events(url: str, fn_index: int, data: list):
    """The queue's messages for one run, as (raw bytes, parsed message)."""
    with httpx.Client(timeout=600) as http:
        yield from messages(http, url, join(http, url, fn_index, data))


def measure(model: str, new_tokens: int) -> dict:
    app_overhead.PROMPT = PROMPT  # handler_args reads it
    demo, url = serve_locally()
    fn_index, fn = next((i, f) for i, f in demo.fns.items() if f.api_name == "generate")
    names = output_names(demo, fn)
    messages = []
    for size, message in events(url, fn_index, handler_args(model, list(MODES), new_tokens)):
        outputs = (message.get("output") or {}).get("data") or []
        heavy = {names[i]: len(json.dumps(v)) for i, v in enumerate(outputs) if len(json.dumps(v)) > 200}
        messages.append({"msg": message.get("msg"), "bytes": size, "outputs_over_200_bytes": heavy})
    demo.close()
    return {"model": model, "new_tokens": new_tokens, "modes": list(MODES), "messages": messages,
            "total_bytes": sum(m["bytes"] for m in messages)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = measure(args.model, args.new_tokens)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
