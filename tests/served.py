"""The app served for a test: a free port, and a close that Gradio's own races cannot fail.

`Blocks.close()` sets the app's stop event, an asyncio.Event, from the calling thread while the server's
event loop, in another thread, may be adding a heartbeat stream's waiter to it: CI once failed a teardown
with "deque mutated during iteration" inside `Event.set`. `close` sets the event on the server's own loop
first and waits for it, so that close()'s set finds it set and touches nothing.
"""

import socket
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def close(demo, timeout_s: float = 5.0) -> None:
    event = demo.app.stop_event
    loop = getattr(event, "_loop", None)  # bound by the first waiter; None: nothing ever waited on it
    if loop is not None and loop.is_running():
        loop.call_soon_threadsafe(event.set)
        deadline = time.monotonic() + timeout_s
        while not event.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
    demo.close()
