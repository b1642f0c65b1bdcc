"""Load, small: a bounded queue answers past its end with the busy message at once, a few sessions at
once all end (output or that message, none hangs), and an ended session leaves nothing behind.
benchmarks/load.py runs the same sessions at 20 and 50 clients against app.py."""

import gc
import importlib.util
import os
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client

import app
from studio import sessions
from studio.live import Live
from studio.queue import BUSY, bounded_queue
from tests import served
from tests.served import free_port
from tests.test_app import gen_args

spec = importlib.util.spec_from_file_location("load_bench", Path(__file__).parents[1] / "benchmarks" / "load.py")
load_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(load_bench)


@pytest.fixture(scope="module")
def small_queue():
    """The app with room for one waiting request, so that a third at once is refused."""
    demo = bounded_queue(app.build_ui(), max_size=1)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    served.close(demo)


def test_past_the_queue_a_request_is_told_busy_at_once(small_queue, checkpoint, monkeypatch):
    demo, url = small_queue
    # the first run must hold the one generation slot until stopped: on an idle CPU the tiny model's
    # clamped run would end before the third request comes, and nothing would be refused
    add = Live.add
    monkeypatch.setattr(Live, "add", lambda self, *args: (time.sleep(0.05), add(self, *args))[1])
    running, waiting, third = (Client(url, verbose=False) for _ in range(3))
    job = running.submit(*gen_args(checkpoint, max_new=1024, modes=["baseline"]), api_name="/generate")
    while not job.outputs():  # it holds the one generation slot
        time.sleep(0.05)
    queued = waiting.submit(*gen_args(checkpoint, max_new=2, modes=["baseline"]), api_name="/generate")
    time.sleep(0.5)
    start = time.monotonic()
    # gradio_client words a refusal itself ("Queue is full! Please try again."); the server says BUSY
    with pytest.raises(Exception, match="Queue is full"):
        third.predict(*gen_args(checkpoint, max_new=2, modes=["baseline"]), api_name="/generate")
    assert time.monotonic() - start < 5  # refused, not left waiting
    fn_index = next(d["id"] for d in httpx.get(f"{url}config").json()["dependencies"]
                    if d.get("api_name") == "generate")
    answer = httpx.post(f"{url}gradio_api/queue/join", json={
        "data": gen_args(checkpoint, max_new=2, modes=["baseline"]), "fn_index": fn_index,
        "session_hash": "raw", "event_data": None, "trigger_id": None})
    assert answer.status_code == 503 and answer.json()["detail"] == BUSY
    # the page sends stop outside the queue (queue=False); gradio_client would queue it, so stop here
    sessions.stop(SimpleNamespace(session_hash=running.session_hash))
    job.result(timeout=60)
    assert queued.result(timeout=60)  # the waiting one still runs
    for client in (running, waiting, third):
        client.close()


def test_a_few_sessions_at_once_all_end_and_leave_nothing_behind(small_queue, checkpoint):
    demo, url = small_queue
    before = (set(sessions._stops), set(sessions.export_root().iterdir()))  # other tests' sessions
    result = load_bench.wave(url, clients=4, limit_s=120, max_new_tokens=4, model=checkpoint)
    assert result["hung"] == 0 and result["failed"] == 0, result["failures"]
    assert result["ok"] + result["busy"] == result["calls"] == 16 and result["ok"] >= 4
    # closed clients end their heartbeats at the server's next one; unload then drops each session
    deadline = time.monotonic() + 40
    while demo.state_holder.session_data and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not demo.state_holder.session_data
    assert load_bench.served(url, checkpoint)
    assert (set(sessions._stops), set(sessions.export_root().iterdir())) == before


def test_an_ended_session_hands_freed_memory_back_to_the_system():
    """glibc keeps freed heap pages for reuse; without trimming them, the server's resident memory only
    grows with each session's records (benchmarks/load_embedded.md: RSS 1.30x its level after 50 clients without it, 1.08x with it)."""
    def rss_mb():
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    junk = [bytes(1000) + bytes([i % 256]) for i in range(300_000)]  # ~300 MB in small heap blocks
    del junk[:-1]  # the newest block stays in use, so the heap's top cannot shrink by itself
    gc.collect()
    before = rss_mb()
    sessions.return_freed_memory()
    assert before - rss_mb() > 200
