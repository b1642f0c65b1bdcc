"""Per browser session: the stop button's event for its running generation, and its export folder.

Exports go under one folder the app makes for itself (mkdtemp: private to this user, a name no one
else chose), in a sub-folder named by a hash of the session: the session hash comes from the client,
so it never becomes part of a path."""

from __future__ import annotations

import contextlib
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
    event = _stops.get(session_id(request))
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


def forget(request) -> None:
    shutil.rmtree(export_dir(request), ignore_errors=True)
    _stops.pop(session_id(request), None)
