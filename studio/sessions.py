"""Per browser session: the stop button's event for its running generation, and its export folder."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from pathlib import Path

EXPORT_ROOT = Path(tempfile.gettempdir()) / "pyramid_studio"

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
    event = _stops.get(session_id(request))
    if event is not None:
        event.set()


def export_dir(request) -> Path:
    return EXPORT_ROOT / session_id(request)


def forget(request) -> None:
    shutil.rmtree(export_dir(request), ignore_errors=True)
    _stops.pop(session_id(request), None)
