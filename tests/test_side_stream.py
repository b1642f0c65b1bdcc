"""Work beside the step's own stream (side_stream.py): ordered after what came before it, joined before
what reads it, and used by a step graph for H2O's picks (RecurFormer's: test_joint_projection.py)."""

import pytest
import torch

from pyramid_core import side_stream
from pyramid_core.policies.h2o import H2OPolicy
from pyramid_core.side_stream import SideStream
from tests.test_graphs import left_padded
from tests.test_step_graphs import forced
from tests.tiny_models import tiny_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_side_work_reads_what_came_before_and_the_join_sees_it(device):
    """Big enough that the side's copy would overtake a doubling still running on the current stream (or
    the read after the join overtake the side's copy) if either wait were missing."""
    x = torch.randn(32_000_000, device=device)
    side = SideStream(torch.device(device))
    doubled = x * 2
    out = torch.empty_like(x)
    side.run(lambda: out.copy_(doubled + 1))
    side.join()
    assert torch.equal(out, doubled + 1) and not side.held


@pytest.mark.parametrize("device", DEVICES)
def test_a_step_graph_picks_h2os_next_evictions_on_its_side_stream(device, monkeypatch):
    """Every steady layer step of the step graph hands its pick to the side stream; with the switch off,
    none does, and the logits, held positions and next evictions are the same."""
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((40, 40)))
    calls, run = [], SideStream.run
    monkeypatch.setattr(SideStream, "run", lambda self, fn: calls.append(fn) or run(self, fn))
    on, beside = forced(lm, ids, mask, H2OPolicy(kv_budget=0.3), True, monkeypatch)
    layers = lm.config.num_hidden_layers
    picks = len(calls)
    # a pick a layer of every traced step: forced's 18 steady steps on a CPU; on a GPU the capture's (replays
    # run no Python)
    assert picks % layers == 0 and picks >= (18 if device == "cpu" else 1) * layers
    monkeypatch.setattr(side_stream, "BESIDE", False)
    off, inline = forced(lm, ids, mask, H2OPolicy(kv_budget=0.3), True, monkeypatch)
    assert len(calls) == picks
    assert (on - off).abs().max() < 1e-5
    for a, b in zip(beside.cache.layers, inline.cache.layers):
        assert torch.equal(a.positions, b.positions) and torch.equal(a.evicted, b.evicted)
