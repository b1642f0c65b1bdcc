"""The one catch-all, at the handler boundary: known failures become a sentence for the user; anything
else is logged with its traceback and summarised."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging

import gradio as gr

from pyramid_core.models import ModelLoadError
from pyramid_core.out_of_memory import OUT_OF_MEMORY, RunOutOfMemory, released_on_oom

__all__ = ["OUT_OF_MEMORY", "handler_boundary", "user_errors"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def user_errors(name: str):
    try:
        with released_on_oom(f"handler {name}"):  # the library's handling, shared with benchmarks/oom_gpu.py
            yield
    except gr.Error:
        raise
    except ModelLoadError as err:
        raise gr.Error(f"Could not load the model: {err}") from err
    except RunOutOfMemory as err:
        raise gr.Error(str(err)) from None  # chained, the error would keep the run's frames alive
    except ValueError as err:
        raise gr.Error(str(err)) from err
    except Exception as err:
        log.exception("handler %s failed", name)
        raise gr.Error(f"Something went wrong ({type(err).__name__}); the server log has the details.") from err


def handler_boundary(fn):
    """fn (a plain or a streaming handler) inside user_errors."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            with user_errors(fn.__name__):
                yield from fn(*args, **kwargs)
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with user_errors(fn.__name__):
            return fn(*args, **kwargs)
    return call
