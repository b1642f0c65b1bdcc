"""The one catch-all, at the handler boundary: known failures become a sentence for the user; anything
else is logged with its traceback and summarised."""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import logging
import traceback

import gradio as gr
import torch

from pyramid_core.models import ModelLoadError

log = logging.getLogger(__name__)

OUT_OF_MEMORY = "Out of memory: try a shorter prompt, fewer modes or fewer new tokens."


def release_run(err: BaseException) -> None:
    """Free what a failed run held: its frames' locals (the KV cache, the records) are reachable from
    the exception's traceback until cleared; then the allocator's cached blocks go back to the device.
    The loaded model is untouched."""
    traceback.clear_frames(err.__traceback__)
    err.__traceback__ = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def user_errors(name: str):
    try:
        yield
    except gr.Error:
        raise
    except ModelLoadError as err:
        raise gr.Error(f"Could not load the model: {err}") from err
    except torch.OutOfMemoryError as err:
        log.warning("handler %s ran out of memory: %s", name, err)
        release_run(err)
        raise gr.Error(OUT_OF_MEMORY) from None  # chained, the error would keep the run's frames alive
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
