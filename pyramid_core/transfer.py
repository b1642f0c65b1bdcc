"""Small host values onto the device without waiting for it."""

from __future__ import annotations

import array

import torch


def to_device(values: list | torch.Tensor, device: torch.device, dtype=torch.long) -> torch.Tensor:
    """A small host list (or CPU tensor) on the device without waiting for the GPU.

    torch.tensor(..., device=cuda) waits, and so does a non-blocking copy from pageable memory (the
    driver stages it synchronously): only a copy from pinned memory is queued like a kernel.
    """
    return pinned(values, dtype, device).to(device, non_blocking=True)


def copy_from_host(buffer: torch.Tensor, values: list[int]) -> None:
    """Small host ints into a device buffer without waiting for the device: buffer.copy_ from pageable
    memory synchronises the stream, which would hold a step launched ahead (engine._steps_ahead) until the
    step before it had finished. From pinned memory the copy is queued in stream order like a kernel; the
    caching host allocator keeps the pinned block until the copy has run."""
    buffer.copy_(pinned(values, torch.long, buffer.device), non_blocking=True)


def pinned(values: list | torch.Tensor, dtype, device: torch.device) -> torch.Tensor:
    """The values on the host, in pinned memory where they are bound for a GPU."""
    host = values if isinstance(values, torch.Tensor) else host_tensor(values, dtype)
    return host.pin_memory() if device.type == "cuda" else host


def host_tensor(values: list, dtype) -> torch.Tensor:
    """A list as a CPU tensor. Ints bound for int64 go through an array: ~2 us, where torch.tensor takes ~7
    on this project's CPU, and the step graph's slot indices come this way at every decode step
    (step_graphs.load_inputs)."""
    if dtype == torch.long and values:
        return torch.frombuffer(array.array("q", values), dtype=torch.long)
    return torch.tensor(values, dtype=dtype)
