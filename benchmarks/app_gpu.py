"""The app streaming on a GPU (issue 18 part 8): through a local server driven by gradio_client, how soon
the first token is made and the first text reaches the client, how many updates a second follow, each
mode's decode tokens/s through the server against the library alone on the same card, the share of the
run that figure updates take, and what the server adds around its own generation (target: <= 10%).

Models: the embedded one, and a random-weight model of Llama-3.2-1B's shape (hidden 2048, 16 layers,
32 heads, 8 KV heads, MLP 8192) with the embedded tokenizer, so its vocabulary is the tokenizer's size
rather than 128256 (noted in the JSON). --tiny runs a tiny random model instead, to check the script on
a CPU. Every mode, 128 new tokens, the long sample prompt; each figure is from the second of two runs
(the first warms up: graph capture, kernels, allocations). Each part is wrapped, so a failure is written
down and the rest still runs.

    python benchmarks/app_gpu.py --out DIR [--tiny] [--new-tokens 128] [--models embedded,llama1b]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradio.queueing import Queue  # noqa: E402
from starlette.responses import StreamingResponse  # noqa: E402

from benchmarks.app_overhead import GenerationTimer, handler_args, serve_locally  # noqa: E402
from pyramid_core import metrics  # noqa: E402
from pyramid_core.engine import Sampling  # noqa: E402
from pyramid_core.pipeline import run_generation  # noqa: E402
from pyramid_core.resources import asset  # noqa: E402
from studio import live as live_view  # noqa: E402
from studio.knobs import build_policies  # noqa: E402
from studio.model_cache import get_model  # noqa: E402
from studio.modes import MODES  # noqa: E402
from studio.request import RunRequest  # noqa: E402
from studio.torch_thread import on_torch_thread  # noqa: E402

PROMPT = max(json.loads(asset("sample_prompts.json").read_text()), key=lambda p: len(p["prompt"]))["prompt"]
EMBEDDED = str(ROOT / "pyramid_core" / "assets" / "embedded")
LLAMA_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=8192, max_position_embeddings=8192, rope_theta=500000.0)

# The client's side, in a process of its own as a browser would be: when each update arrived (wall
# clock, shared with the server on one host) and how many characters the panes held.
CLIENT = """
import json, sys, time
import gradio_client.client as gc_client, gradio_client.utils as gc_utils
from gradio_client import Client

spent = [0.0]  # the client's own work on each update: applying the diff to a deep copy, then processing

def timed(fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t
    return wrapper

gc_utils.apply_diff = timed(gc_utils.apply_diff)
gc_client.Endpoint.process_predictions = timed(gc_client.Endpoint.process_predictions)
parsed = []  # when the client's reader thread parsed each update's SSE message off the socket


class TimedJson:
    def __getattr__(self, name):
        return getattr(json, name)

    def loads(self, text, *args, **kwargs):
        msg = json.loads(text, *args, **kwargs)
        if isinstance(msg, dict) and msg.get("msg") == "process_generating":
            parsed.append(time.time())
        return msg


gc_client.json = TimedJson()


# The job's outputs as they arrive. gradio_client's own iterator (Job.__next__) sleeps 1 ms while it holds
# the job's lock, and its reader thread needs that lock to append an output: with the iterator spinning,
# the reader waits its turn, for seconds on the H200 machine (benchmarks/app_gpu.md). Here the sleep is
# outside the lock.
def polled(job):
    seen = 0
    while True:
        done = job.future.done()  # read before the outputs: none that came before the end is missed
        outputs = job.outputs()
        yield from outputs[seen:]
        seen = len(outputs)
        if done:
            return
        time.sleep(0.002)


client = Client(sys.argv[1], verbose=False)
iterate = polled if sys.argv[3] == "poll" else iter
print("ready", flush=True)
for line in sys.stdin:
    start, spent[0], parsed[:] = time.time(), 0.0, []
    updates = [[time.time(), sum(len(str(x)) for x in out[:int(sys.argv[2])])]
               for out in iterate(client.submit(*json.loads(line), api_name="/generate"))]
    print(json.dumps({"start": start, "updates": updates, "end": time.time(), "client_s": spent[0],
                      "parsed": parsed}), flush=True)
"""


def random_model(kind: str) -> str:
    """A random-weight checkpoint with the embedded tokenizer: Llama-3.2-1B's shape, or a tiny one."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED)
    shape = LLAMA_1B if kind == "llama1b" else dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                     num_key_value_heads=2, intermediate_size=128,
                                                     max_position_embeddings=8192)
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, **shape,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    path = tempfile.mkdtemp(prefix=f"app_gpu_{kind}_")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


PUSHES = []  # wall clock of each request the server's queue took in (Queue.push)


def stamp_pushes() -> None:
    """Stamp Queue.push for good, before the app is built: its bounded queue keeps the push it finds."""
    push = Queue.push

    async def timed_push(queue, *args, **kwargs):
        PUSHES.append(time.time())
        return await push(queue, *args, **kwargs)

    Queue.push = timed_push


class ServerProbe:
    """Server-side timings of one run: when the first record was made, the generation's wall time
    (stream.generate_into), the seconds spent building updates with figures, and the finished runs."""

    def __init__(self):
        self.first_record = self.last_record = self.final_built = self.final_cpu = None
        self.yields = []  # when the server built each update (wall clock, shared with the client)
        self.figure_s = 0.0
        self.runs = {}
        self.gc_pauses = []  # (generation, seconds) of each collection: every thread waits for one
        started = []

        def timed_gc(phase, info):
            if phase == "start":
                started[:] = [time.perf_counter()]
            elif started:
                self.gc_pauses.append((info["generation"], time.perf_counter() - started[0]))

        gc.callbacks.append(timed_gc)
        self.restore_gc = lambda: gc.callbacks.remove(timed_gc)
        self.queued = []  # when Gradio's queue handed each update to the page's stream (wall clock)
        send = Queue.send_message

        def timed_send(queue, event, message):
            if getattr(message, "msg", None) == "process_generating":
                probe.queued.append(time.time())
            send(queue, event, message)

        Queue.send_message = timed_send
        self.processing = None  # when the queue started the request's job
        process = Queue.process_events

        async def timed_process(queue, *args, **kwargs):
            probe.processing = probe.processing or time.time()
            return await process(queue, *args, **kwargs)

        Queue.process_events = timed_process
        self.handler = None  # when the app's handler began (it reads its form first)
        from_form = RunRequest.__dict__["from_form"]

        def timed_from_form(cls, form):
            probe.handler = probe.handler or time.time()
            return from_form.__func__(cls, form)

        RunRequest.from_form = classmethod(timed_from_form)

        def restore_queue():
            Queue.send_message, Queue.process_events = send, process
            RunRequest.from_form = from_form

        self.restore_queue = restore_queue
        self.streamed = []  # (chunk made by the event stream, chunk taken by uvicorn) per update (wall clock)
        stream_response = StreamingResponse.stream_response

        async def timed_stream(response, send_body):
            async def timed_body(message):
                made = time.time()
                await send_body(message)
                if b'"process_generating"' in bytes(message.get("body", b"")):
                    probe.streamed.append((made, time.time()))

            await stream_response(response, timed_body)

        StreamingResponse.stream_response = timed_stream
        self.restore_stream = lambda: setattr(StreamingResponse, "stream_response", stream_response)
        add, outputs = live_view.Live.add, live_view.Live.outputs
        probe = self

        def timed_add(live, mode, record):
            probe.last_record = time.time()
            if probe.first_record is None:
                probe.first_record = probe.last_record
            add(live, mode, record)

        def timed_outputs(live, final=False):
            start, cpu = time.perf_counter(), time.thread_time()
            probe.yields.append(time.time())
            out = outputs(live, final)
            if live.plotted:
                probe.figure_s += time.perf_counter() - start
            if final:
                probe.runs = {m: list(r) for m, r in live.runs.items()}
                probe.final_built, probe.final_cpu = time.time(), time.thread_time() - cpu
            return out

        live_view.Live.add, live_view.Live.outputs = timed_add, timed_outputs
        self.restore_live = lambda: setattr(live_view.Live, "add", add) or setattr(live_view.Live, "outputs", outputs)
        self.timer = GenerationTimer()

    def restore(self):
        self.restore_queue()
        self.restore_stream()
        self.restore_gc()
        self.restore_live()
        self.timer.restore()


def since(a: float | None, b: float | None) -> float | None:
    return round(b - a, 3) if a is not None and b is not None else None


def server_run(client, model: str, modes: list[str], new_tokens: int) -> dict:
    probe = ServerProbe()
    try:
        client.stdin.write(json.dumps(handler_args(model, modes, new_tokens)) + "\n")
        client.stdin.flush()
        seen = json.loads(client.stdout.readline())
    finally:
        probe.restore()
    start, wall = seen["start"], seen["end"] - seen["start"]
    pushed = next((t for t in PUSHES if t >= start), None)
    updates = seen["updates"]
    # updates whose panes hold more text than the one before (the first holds the prefill's token)
    grown = [t for (t, n), (_, before) in zip(updates, [[0, 0]] + updates) if n > before]
    during = [t for t in grown if t < updates[-1][0] - 1e-3]
    # the n-th update built on the server is the n-th the client receives: how long each took to arrive
    lags = sorted(t - y for (t, _), y in zip(updates, probe.yields))
    # split each lag: built -> queued for the stream (the server) and queued -> received (the wire, the client)
    in_server = sorted(q - y for q, y in zip(probe.queued, probe.yields))
    on_wire = sorted(t - q for (t, _), q in zip(updates, probe.queued))
    # the wire's part, in four: queued -> chunk made by the page's event stream (the event loop's turn),
    # made -> taken by uvicorn (a socket write; long when the client does not read), taken -> parsed by
    # the client's reader thread (the socket and the client), parsed -> yielded to the caller (its poll)
    made, taken = [m for m, _ in probe.streamed], [t for _, t in probe.streamed]
    wire = {"to_event_stream_s": sorted(m - q for m, q in zip(made, probe.queued)),
            "uvicorn_write_s": sorted(t - m for m, t in probe.streamed),
            "to_client_reader_s": sorted(r - t for r, t in zip(seen.get("parsed", []), taken)),
            "client_poll_s": sorted(u - r for (u, _), r in zip(updates, seen.get("parsed", [])))}
    return {
        "wall_s": round(wall, 3), "generating_s": round(probe.timer.seconds, 3),
        "server_added": round(wall / probe.timer.seconds - 1, 3) if probe.timer.seconds else None,
        # the same up to the last update written to the socket: the server's cost without the client's reading
        "server_added_at_socket": round((taken[-1] - start) / probe.timer.seconds - 1, 3)
        if taken and probe.timer.seconds else None,
        # the same from the server's receipt of the request (Queue.push) rather than gradio_client's submit:
        # a browser's POST reaches the queue ~2 ms after it starts, gradio_client's submit ~20 ms
        "server_added_from_request": round((taken[-1] - pushed) / probe.timer.seconds - 1, 3)
        if taken and pushed and probe.timer.seconds else None,
        # the server's added time in two: before the generation starts (queue, form, model, handler) and
        # after it ends up to the last update at the socket (the final update, Gradio, the event stream)
        "before_generation_s": round(probe.timer.began - start, 3) if probe.timer.began else None,
        "after_generation_s": round(taken[-1] - probe.timer.ended, 3) if taken and probe.timer.ended else None,
        # the part before in three: the client's submit to the server's queue, the queue's wait for its
        # next poll, the job's start to the first generation (form, model lookup, policies, handler)
        "before_parts_s": {"to_queue": since(start, pushed), "queue_wait": since(pushed, probe.processing),
                           "to_generation": since(probe.processing, probe.timer.began),
                           "to_handler": since(probe.processing, probe.handler)},
        # the part after in two: the last token to the final update handed to the stream, then to the socket
        # (the final update's three parts: the handler waking, building it, Gradio taking it to the stream)
        "after_parts_s": {"final_update": since(probe.timer.ended, probe.queued[-1] if probe.queued else None),
                          "to_socket": since(probe.queued[-1] if probe.queued else None, taken[-1] if taken else None),
                          "final_wake": since(probe.timer.ended, probe.yields[-1] if probe.yields else None),
                          "final_build": since(probe.yields[-1] if probe.yields else None, probe.final_built),
                          "final_to_stream": since(probe.final_built, probe.queued[-1] if probe.queued else None),
                          # the building thread's own CPU time: what the build costs without waiting for the GIL
                          "final_build_cpu": round(probe.final_cpu, 3) if probe.final_cpu is not None else None},
        "first_token_s": round(probe.first_record - start, 3) if probe.first_record else None,
        "first_text_update_s": round(grown[0] - start, 3) if grown else None,
        "first_text_after_first_token_s": round(grown[0] - probe.first_record, 3) if grown and probe.first_record else None,
        "updates": len(updates), "text_updates_during_run": len(during),
        "server_updates": len(probe.yields),
        "server_updates_before_last_record": sum(y < probe.last_record for y in probe.yields) if probe.last_record else None,
        "arrival_lag_s": median_max(lags),
        "lag_in_server_s": median_max(in_server), "lag_on_wire_s": median_max(on_wire),
        "wire_parts": {k: median_max(v) for k, v in wire.items()},
        "updates_per_s": round(len(updates) / wall, 2),
        # gradio_client's own work (a browser's would differ): arrival times include it
        "client_processing_s": round(seen.get("client_s", 0.0), 3),
        "figure_update_share": round(probe.figure_s / wall, 3),
        "gc_s": {"collections": len(probe.gc_pauses), "total": round(sum(s for _, s in probe.gc_pauses), 3),
                 "longest": round(max((s for _, s in probe.gc_pauses), default=0.0), 3),
                 "full": sum(g == 2 for g, _ in probe.gc_pauses),
                 "by_generation": {g: [sum(x == g for x, _ in probe.gc_pauses),
                                       round(sum(s for x, s in probe.gc_pauses if x == g), 3)] for g in (0, 1, 2)}},
        "decode_tokens_per_s": {m: rounded(metrics.decode_tokens_per_s(r)) for m, r in probe.runs.items()},
    }


def median_max(values: list[float]) -> dict | None:
    return {"median": round(values[len(values) // 2], 3), "max": round(values[-1], 3)} if values else None


def library_tokens_per_s(model: str, modes: list[str], new_tokens: int) -> dict:
    """Each mode alone through the library, on the app's torch thread, as the CLI would run it."""
    lm = get_model(model)
    out = {}
    for mode, policy in build_policies(modes, {}).items():
        summary = on_torch_thread(run_generation, lm, PROMPT, policy, new_tokens, Sampling())
        out[mode] = rounded(summary["decode_tokens_per_s"])
    return out


def rounded(x):
    return None if x is None else round(x, 1)


def attempt(results: dict, key: str, fn) -> None:
    try:
        results[key] = fn()
    except Exception:  # one part failing must not lose the others
        results[key] = {"error": traceback.format_exc(limit=3)}
        print(results[key]["error"], file=sys.stderr)


def markdown(result: dict) -> str:
    lines = [f"# App streaming on {result['device']}", "", f"{result['new_tokens']} new tokens, modes "
             f"{', '.join(result['modes'])}, prompt of {len(PROMPT)} characters; second run of each (warm).", ""]
    for name, part in result["models"].items():
        lines += [f"## {name}", "", "```json", json.dumps(part, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a directory: app_gpu.json and app_gpu.md")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (checks the script on a CPU)")
    parser.add_argument("--models", default="embedded,llama1b")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--warm-runs", type=int, default=1, help="warm requests per model (server, server_2, ...)")
    parser.add_argument("--no-uvloop", action="store_true",
                        help="serve on asyncio's loop: uvicorn takes uvloop where it is installed (the GPU "
                             "machine's image has it, the development machines do not)")
    parser.add_argument("--client-iterator", action="store_true",
                        help="read updates with gradio_client's own iterator (it starves its reader thread: "
                             "the lag measured before this flag existed)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="the RecurFormer modes run on the embedded model only (their adapters are its)")
    args = parser.parse_args()
    import torch

    modes = args.modes.split(",")
    names = ["tiny"] if args.tiny else args.models.split(",")
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "client": "gradio_client's iterator" if args.client_iterator else "polled outputs",
              "event_loop": "asyncio" if args.no_uvloop or importlib.util.find_spec("uvloop") is None else "uvloop",
              "new_tokens": args.new_tokens, "modes": modes, "models": {},
              "notes": "llama1b: random weights, the embedded tokenizer's vocabulary (not 128256)"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.no_uvloop:
        sys.modules["uvloop"] = None  # uvicorn's "auto" loop then falls back to asyncio's
    stamp_pushes()
    demo, url = serve_locally()
    client = subprocess.Popen([sys.executable, "-c", CLIENT, url, str(len(MODES)),
                               "iterate" if args.client_iterator else "poll"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    import benchmarks.app_overhead as overhead
    overhead.PROMPT = PROMPT  # handler_args reads it: the long sample prompt, not app_overhead's own
    try:
        assert client.stdout.readline().strip() == "ready", "the client did not start"
        for name in names:
            part = result["models"][name] = {}
            attempt(part, "model", lambda: EMBEDDED if name == "embedded" else random_model(
                "llama1b" if name == "llama1b" else "tiny"))
            model = part.get("model")
            if not isinstance(model, str):
                continue
            run_modes = part["modes"] = modes if name == "embedded" else [m for m in modes if "recurformer" not in m]
            attempt(part, "server_cold", lambda: server_run(client, model, run_modes, args.new_tokens))
            for i in range(args.warm_runs):
                attempt(part, "server" if i == 0 else f"server_{i + 1}",
                        lambda: server_run(client, model, run_modes, args.new_tokens))
            attempt(part, "library_decode_tokens_per_s",
                    lambda: library_tokens_per_s(model, run_modes, args.new_tokens))
            (out / "app_gpu.json").write_text(json.dumps(result, indent=2) + "\n")  # what we have so far
    finally:
        client.stdin.close()
        client.wait(timeout=60)
        demo.close()
    (out / "app_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "app_gpu.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
