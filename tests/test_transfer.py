"""transfer.py: small host values onto the device without waiting for it."""

import pytest
import torch

from pyramid_core.transfer import copy_from_host

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_host_ints_reach_a_device_buffer(device):
    """copy_from_host (each step's slot indices into the step graph): the values land, converted to the
    buffer's dtype, and an empty list is a no-op rather than an error."""
    buffer = torch.zeros(4, dtype=torch.int32, device=device)
    copy_from_host(buffer, [7, 0, 2**20, 3])
    assert buffer.tolist() == [7, 0, 2**20, 3] and buffer.dtype == torch.int32
    empty = torch.zeros(0, dtype=torch.long, device=device)
    copy_from_host(empty, [])
    assert empty.numel() == 0
