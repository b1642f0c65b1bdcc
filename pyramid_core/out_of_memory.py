"""A request that runs out of device memory: free what it held, keep the model, say so in one sentence.

The app's error boundary (studio/errors.py) and the GPU check (benchmarks/oom_gpu.py) both go through
`released_on_oom`, so what the check measures is what a user's request does.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import traceback

import torch

log = logging.getLogger(__name__)

OUT_OF_MEMORY = "Out of memory: try a shorter prompt, fewer modes or fewer new tokens."


class RunOutOfMemory(RuntimeError):
    """A run ran out of device memory and what it held is freed; str() is the sentence for the user."""


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
def released_on_oom(name: str):
    """Run a request; a torch.OutOfMemoryError becomes RunOutOfMemory(OUT_OF_MEMORY) once the run's
    memory is freed."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        log.warning("%s ran out of memory: %s", name, err)
        release_run(err)
        raise RunOutOfMemory(OUT_OF_MEMORY) from None  # chained, the error would keep the run's frames alive
