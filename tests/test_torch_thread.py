"""on_torch_thread: every call on one long-lived thread, results and errors back to the caller."""

import multiprocessing
import threading

import pytest

from studio.torch_thread import on_torch_thread


def test_calls_from_many_threads_run_on_one_thread_that_is_none_of_theirs():
    callers, runners = [], []

    def call():
        callers.append(threading.get_ident())
        runners.append(on_torch_thread(threading.get_ident))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    call()
    assert len(set(runners)) == 1 and not set(runners) & set(callers)


def test_the_result_and_the_error_come_back():
    assert on_torch_thread(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
    with pytest.raises(ValueError, match="the prompt is empty"):
        on_torch_thread(lambda: (_ for _ in ()).throw(ValueError("the prompt is empty")))


def test_a_call_from_the_torch_thread_runs_there_directly():
    outer = on_torch_thread(lambda: (threading.get_ident(), on_torch_thread(threading.get_ident)))
    assert outer[0] == outer[1]  # without the shortcut this would wait for itself forever


def _child(conn):
    conn.send(on_torch_thread(lambda: 6 * 7))


def test_a_forked_child_gets_a_torch_thread_of_its_own():
    """ZeroGPU runs GPU work in a forked process: the parent's executor is there, its thread is not."""
    on_torch_thread(int)  # the parent's thread exists
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child,))
    proc.start()
    try:
        assert parent.poll(30), "the child's call never returned"
        assert parent.recv() == 42
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def test_the_torch_thread_shortens_the_gil_switch_interval():
    """Other threads (the event loop, the page's updates) wait at most this long for the GIL while the
    torch thread launches GPU kernels without pause; at Python's default 5 ms a page update came seconds
    late on an H200."""
    import sys

    from studio.torch_thread import SWITCH_INTERVAL_S

    on_torch_thread(lambda: None)
    assert SWITCH_INTERVAL_S < 0.005
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
