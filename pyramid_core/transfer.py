"""Small host values onto the device without waiting for it."""

from __future__ import annotations

import torch


def to_device(values: list | torch.Tensor, device: torch.device, dtype=torch.long) -> torch.Tensor:
    """A small host list (or CPU tensor) on the device without waiting for the GPU.

    torch.tensor(..., device=cuda) waits, and so does a non-blocking copy from pageable memory (the
    driver stages it synchronously): only a copy from pinned memory is queued like a kernel.
    """
    return pinned(values, dtype, device).to(device, non_blocking=True)


def copy_from_host(buffer: torch.Tensor, values: list) -> None:
    """Small host values into a device buffer without waiting for the device: buffer.copy_ from pageable
    memory synchronises the stream, which would hold a step launched ahead (engine._steps_ahead) until the
    step before it had finished. From pinned memory the copy is queued in stream order like a kernel; the
    caching host allocator keeps the pinned block until the copy has run."""
    buffer.copy_(pinned(values, buffer.dtype, buffer.device), non_blocking=True)


def pinned(values: list | torch.Tensor, dtype, device: torch.device) -> torch.Tensor:
    """The values on the host, in pinned memory where they are bound for a GPU."""
    host = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    return host.pin_memory() if device.type == "cuda" else host
