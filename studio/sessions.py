"""Per browser session: the stop button's event for its running generation, and its export folder;
when the session ends, both go, and so does everything Gradio keeps for it (release_on_unload).

Exports go under one folder the app makes for itself (mkdtemp: private to this user, a name no one
else chose), in a sub-folder named by a hash of the session: the session hash comes from the client,
so it never becomes part of a path."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import hashlib
import shutil
import tempfile
import threading
from pathlib import Path

_export_root: Path | None = None

_stops: dict[str, threading.Event] = {}


def session_id(request) -> str:
    return getattr(request, "session_hash", None) or "local"


@contextlib.contextmanager
def stoppable(request):
    """An event that stop() sets for this session, for as long as its generation runs."""
    stop = _stops[session_id(request)] = threading.Event()
    try:
        yield stop
    finally:
        _stops.pop(session_id(request), None)


def stop(request) -> None:
    """Ask this session's running generation to finish after the current step."""
    stop_session(session_id(request))


def stop_session(session_hash: str) -> None:
    event = _stops.get(session_hash)
    if event is not None:
        event.set()


def export_root() -> Path:
    """This process's own export folder, made on first use."""
    global _export_root
    if _export_root is None or not _export_root.is_dir():
        _export_root = Path(tempfile.mkdtemp(prefix="pyramid_studio-"))
    return _export_root


def export_dir(request) -> Path:
    return export_root() / hashlib.sha256(session_id(request).encode()).hexdigest()[:24]


def forget(request, state_holder=None) -> None:
    """Drop a session that ended: its export folder, its stop event and, given Gradio's StateHolder, its
    gr.State values and the per-session copy of the page's config. Gradio keeps the last two for an hour
    after the page closes (so that a reopened tab finds them); a run's records are megabytes, so with
    many short sessions the server's memory grew by that much each."""
    shutil.rmtree(export_dir(request), ignore_errors=True)
    _stops.pop(session_id(request), None)
    if state_holder is not None:
        state_holder.delete_state(session_id(request))  # calls each State's delete_callback
        with state_holder.lock:
            state_holder.session_data.pop(session_id(request), None)
            state_holder.time_last_used.pop(session_id(request), None)
    return_freed_memory()


def return_freed_memory() -> None:
    """Hand the heap's freed pages back to the system: glibc keeps what a run's records and tensors
    freed for reuse, so without this the server's resident memory only ever grows (benchmarks/load.py)."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:  # glibc only; elsewhere the allocator decides
        trim(0)
