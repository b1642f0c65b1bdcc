"""Faults: out of memory, stop, a client leaving mid-run, a model that fails to load. Each ends the
work, frees the run's KV cache and trace, and leaves the loaded model serving the next request."""

import asyncio
import gc
import json
import shutil
import time
import uuid
import weakref
from types import SimpleNamespace

import gradio as gr
import httpx
import pytest
import torch

import app
from pyramid_core import engine
from studio import model_cache, sessions, stream
from studio.errors import OUT_OF_MEMORY
from studio.modes import MODES
from studio.queue import stop_on_disconnect
from tests.test_app import STATS, gen_args, server  # noqa: F401 (server is a fixture)


@pytest.fixture()
def tracked(monkeypatch):
    """Weak references to every KV cache and every live view (the run's trace) made from here on, and
    the count of decode steps run; `fault(n)` sets what happens at decode step n (1-based)."""
    seen = SimpleNamespace(caches=[], lives=[], steps=0, at={})
    start, decode, live = engine.start_request, engine.decode_step, stream.Live

    def start_request(*args, **kwargs):
        req = start(*args, **kwargs)
        seen.caches.append(weakref.ref(req.cache))
        return req

    def decode_step(*args, **kwargs):
        seen.steps += 1
        seen.at.pop(seen.steps, lambda: None)()
        return decode(*args, **kwargs)

    class Live(live):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.lives.append(weakref.ref(self))

    monkeypatch.setattr(engine, "start_request", start_request)
    monkeypatch.setattr(engine, "decode_step", decode_step)
    monkeypatch.setattr(stream, "Live", Live)
    return seen


def freed(seen) -> bool:
    gc.collect()
    return bool(seen.caches) and not any(ref() for ref in seen.caches + seen.lives)


def run_handler(checkpoint, session="faults", **overrides):
    request = SimpleNamespace(session_hash=session)
    return list(app.generate_run(request, *gen_args(checkpoint, **overrides)))


def raise_oom():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")  # as torch words it


def test_out_of_memory_is_one_sentence_frees_the_run_and_keeps_the_model(checkpoint, tracked):
    lm = model_cache.get_model(checkpoint)
    tracked.at[3] = raise_oom  # the test hook: the third decode step runs out of memory
    with pytest.raises(gr.Error) as caught:
        run_handler(checkpoint, max_new=16, modes=["baseline", "pyramid"])
    assert caught.value.message == OUT_OF_MEMORY and caught.value.__cause__ is None
    assert freed(tracked)
    assert model_cache.get_model(checkpoint) is lm  # still loaded, not reloaded
    final = run_handler(checkpoint, max_new=4, modes=["baseline"])[-1]
    assert "4 tokens" in final[STATS["baseline"]]


def test_stop_ends_the_run_within_a_decode_step_and_frees_it(checkpoint, tracked):
    """Stop pressed while decode step 5 runs: one more step (the last, recorded in detail for the final
    figures, issue 18) and no other starts, though panes are not yet due."""
    tracked.at[5] = lambda: sessions.stop(SimpleNamespace(session_hash="stopper"))
    outputs = run_handler(checkpoint, session="stopper", max_new=200, modes=["baseline"])
    assert tracked.steps == 6
    assert "7 tokens" in outputs[-1][STATS["baseline"]]  # the prefill's token and six decoded ones
    assert freed(tracked)


def test_a_model_that_fails_to_load_leaves_the_previous_one_serving(checkpoint, tmp_path):
    lm = model_cache.get_model(checkpoint)
    broken = shutil.copytree(checkpoint, tmp_path / "broken")
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"\x00" * 64)  # the config reads fine, the weights do not
    with pytest.raises(gr.Error):
        run_handler(str(broken), max_new=2, modes=["baseline"])
    assert model_cache.get_model(checkpoint) is lm
    final = run_handler(checkpoint, max_new=3, modes=["baseline"])[-1]
    assert "3 tokens" in final[STATS["baseline"]]


def test_a_client_leaving_mid_run_ends_the_work_and_frees_it(server, checkpoint, tracked):
    """A raw client joins the queue, reads a few updates of a long run and hangs up."""
    config = httpx.get(f"{server}config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")
    session = uuid.uuid4().hex
    body = {"data": gen_args(checkpoint, max_new=1000, modes=["baseline"]), "fn_index": fn_index,
            "session_hash": session, "event_data": None, "trigger_id": None}
    httpx.post(f"{server}gradio_api/queue/join", json=body).raise_for_status()
    with httpx.stream("GET", f"{server}gradio_api/queue/data", params={"session_hash": session},
                      timeout=30) as events:
        updates = 0
        for line in events.iter_lines():
            if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_generating":
                updates += 1
            if updates == 3:
                break  # leaving the with block closes the connection
    left = time.monotonic()
    while not freed(tracked) and time.monotonic() < left + 30:
        time.sleep(0.1)
    assert freed(tracked)
    # Gradio notices a closed connection when it next writes to it or polls (every 10 s at most)
    ended = tracked.steps
    assert ended < 999  # far from the 1000 tokens asked for
    time.sleep(0.5)
    assert tracked.steps == ended  # and nothing runs once it is freed


def slowed(monkeypatch, seconds: float) -> None:
    """Every decode step takes `seconds` longer: a long run from a tiny model."""
    decode = engine.decode_step

    def decode_step(*args, **kwargs):
        time.sleep(seconds)
        return decode(*args, **kwargs)

    monkeypatch.setattr(engine, "decode_step", decode_step)


def test_text_streams_while_the_page_is_slow_to_take_updates(checkpoint, tracked, monkeypatch):
    """Issue 18 part 8: the generation used to wait while each update was processed and rationed the
    updates by that cost, so with a page slow to take them (a server busy sending) the text stayed
    blank until the end. Here the page takes 0.25 s per update and the run lasts ~1.5 s: the pane
    must show several texts as they grow, before the final one."""
    slowed(monkeypatch, 0.005)
    pane = list(MODES).index("baseline")
    texts = []
    for outputs in app.generate_run(SimpleNamespace(session_hash="slow-page"),
                                    *gen_args(checkpoint, max_new=300, modes=["baseline"])):
        texts.append(outputs[pane])
        time.sleep(0.25)
    partial = set(texts[:-1]) - {texts[-1]}
    assert len(partial) >= 3, texts


def test_a_client_leaving_stops_the_generation_before_its_next_step(checkpoint, tracked, monkeypatch):
    """Gradio calls Queue.clean_events when a client's connection closes; the generation, running on
    the torch thread without waiting for the page, must stop at once, not when the page next asks."""
    slowed(monkeypatch, 0.01)
    cleaned = []

    async def clean_events(*, session_hash=None, event_id=None):
        cleaned.append(session_hash)

    demo = SimpleNamespace(_queue=SimpleNamespace(clean_events=clean_events, event_ids_to_events={}))
    stop_on_disconnect(demo)
    run = app.generate_run(SimpleNamespace(session_hash="leaver"), *gen_args(checkpoint, max_new=1000,
                                                                             modes=["baseline"]))
    tracked.at[5] = lambda: asyncio.run(demo._queue.clean_events(session_hash="leaver"))  # during step 5
    next(run)  # the first update; the page asks for no other
    time.sleep(1.0)  # ~100 steps' time
    assert tracked.steps == 6  # step 5 finishes, and one more (the last, recorded in detail)
    assert cleaned == ["leaver"]  # and Gradio's own clean-up still runs
    run.close()
    assert freed(tracked)
