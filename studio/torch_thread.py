"""All of a server's torch work on one long-lived thread.

PyTorch's CPU wheels parallelise ops with libgomp (GNU OpenMP), which gives every thread that runs a
parallel op a team of worker threads of its own. Once it manages more threads than there are CPUs,
libgomp stops letting idle workers spin and puts them to sleep almost at once ("throttled" spinning),
so every later op pays for waking them. A web server runs its handlers on a pool of threads: after a
few requests, generation would run that way. On a 2-core CPU with 2 torch threads the embedded model
generated 21% slower once two other threads had each run a few ops (benchmarks/omp_teams.py).
Routing every torch call of the app through `on_torch_thread` keeps one team for the process's life.

On a GPU the torch thread runs Python almost without pause (kernels launch asynchronously, so it never
waits for them), and a thread that gives up the GIL (the event loop at every poll, a socket write)
gets it back only when the holder is made to yield, after `sys.getswitchinterval()`: 5 ms by default.
A page update needs dozens of such hand-overs: on an H200 the first text reached the client 3.2 s after
the first token, and a 1.3 s run of the embedded model sent no text at all until it ended
(benchmarks/app_gpu.md). The torch thread therefore shortens the interval for the process
(SWITCH_INTERVAL_S).
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
SWITCH_INTERVAL_S = 0.0005  # a tenth of Python's default; see the module's docstring

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_owner_pid: int | None = None
_thread_id: int | None = None


def on_torch_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) run on this process's torch thread; its result, or its exception, here.

    Calls from the torch thread itself run directly (a nested call would otherwise wait for itself).
    Calls from several threads run one after the other, in the order they came.
    """
    if threading.get_ident() == _thread_id and _owner_pid == os.getpid():
        return fn(*args, **kwargs)
    return _torch_executor().submit(fn, *args, **kwargs).result()


def start_on_torch_thread(fn: Callable[..., T], *args, **kwargs) -> Future:
    """fn(*args, **kwargs) started on this process's torch thread without waiting for it: a whole run
    generates there while the caller streams what it has made so far."""
    return _torch_executor().submit(fn, *args, **kwargs)


def _torch_executor() -> ThreadPoolExecutor:
    global _executor, _owner_pid
    with _lock:
        # a forked child (ZeroGPU runs GPU work in one) inherits the executor but not its thread
        if _executor is None or _owner_pid != os.getpid():
            _executor = ThreadPoolExecutor(1, thread_name_prefix="torch", initializer=_remember_thread)
            _owner_pid = os.getpid()
        return _executor


def _remember_thread() -> None:
    global _thread_id
    _thread_id = threading.get_ident()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
