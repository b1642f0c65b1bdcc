"""Small host values onto the device without waiting for it."""

from __future__ import annotations

import torch


def to_device(values: list | torch.Tensor, device: torch.device, dtype=torch.long) -> torch.Tensor:
    """A small host list (or CPU tensor) on the device without waiting for the GPU.

    torch.tensor(..., device=cuda) waits, and so does a non-blocking copy from pageable memory (the
    driver stages it synchronously): only a copy from pinned memory is queued like a kernel.
    """
    host = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)
