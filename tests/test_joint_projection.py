"""A layer's kept heads' q, k, v and its stack's projection as one matmul (joint_projection.py): the same
outputs as the two matmuls and the gather it replaces, on the model families' awkward parts."""

import pytest
import torch

from pyramid_core import generate, joint_projection, layers, recurrent_groups, side_stream, step_graphs
from pyramid_core.engine import teacher_forced_logits
from pyramid_core.policies import RecurFormerPolicy
from pyramid_core.recurformer.stacked import StackedRNN
from tests.test_graphs import left_padded
from tests.test_recurformer import assert_close
from tests.test_stacked_rnn import WIDE, save_random_adapter
from tests.test_step_graphs import forced
from tests.tiny_models import tiny_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# layer 0 loses all 4 groups (no head attends), layer 1 three, layer 3 one; layer 2 none
LAYOUT = {0: [0, 1, 2, 3], 1: [0, 1, 3], 3: [2]}


def wide_adapter(family, directory, taps=1):
    lm = tiny_model(family, **WIDE)
    return lm, RecurFormerPolicy(adapter=save_random_adapter(lm, LAYOUT, taps, directory))


def counting_joints(monkeypatch) -> list:
    """Count the joint matmuls the engine runs."""
    calls, call = [], joint_projection.JointProjection.__call__
    monkeypatch.setattr(joint_projection.JointProjection, "__call__", lambda self, x: calls.append(1) or call(self, x))
    return calls


@pytest.mark.parametrize("family, taps", [("llama", 1), ("qwen2", 3), ("qwen3", 1)])
def test_engine_logits_equal_the_two_matmuls(family, taps, monkeypatch, tmp_path):
    """Left-padded prefill and forced decode steps: the logits with the joint projection (Qwen2's q/k/v
    biases, Qwen3's q/k norms, a layer with no attending head) are those with it switched off."""
    lm, policy = wide_adapter(family, tmp_path, taps)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 97, (3, 40), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :6], mask[2, :13] = 0, 0
    forced = torch.randint(3, 97, (3, 6), generator=gen)
    calls = counting_joints(monkeypatch)
    joint = teacher_forced_logits(lm, ids, forced, policy, mask)
    assert len(calls) == 3 * 7, "one joint matmul per replaced layer, at the prefill and each forced step"
    monkeypatch.setattr(joint_projection, "JOINT_QKV", False)
    separate = teacher_forced_logits(lm, ids, forced, policy, mask)
    assert len(calls) == 3 * 7
    assert_close("logits", separate, joint, torch.float32)


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphs"])
def test_generated_tokens_equal_the_two_matmuls(graphs, monkeypatch, tmp_path):
    lm, policy = wide_adapter("llama", tmp_path, taps=3)
    ids = torch.randint(3, 97, (2, 30), generator=torch.Generator().manual_seed(3))

    def tokens():
        return [r.token_ids for r in generate(lm, ids, policy=policy, max_new_tokens=10, cuda_graphs=graphs)]

    joint = tokens()
    monkeypatch.setattr(joint_projection, "JOINT_QKV", False)
    assert joint == tokens()


@pytest.mark.parametrize("device", DEVICES)
def test_a_step_graph_starts_each_stack_before_its_layers_attention(device, monkeypatch, tmp_path):
    """In a decode step that is one graph, a layer's stack steps before the layer's attention (on CUDA on a
    side stream, beside it: recurrent_groups.Beside), and the logits and the states are those of the
    stack stepping after attention."""
    lm, policy = wide_adapter("llama", tmp_path, taps=3)
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((30, 24)))
    events = []
    run_groups, attend = layers.run_groups, step_graphs.reservation_attention
    monkeypatch.setattr(layers, "run_groups", lambda *a, **k: events.append("recurrence") or run_groups(*a, **k))
    monkeypatch.setattr(step_graphs, "reservation_attention",
                        lambda *a, **k: events.append("attention") or attend(*a, **k))
    # a step layer by layer: the recurrence if the layer has replaced groups, attention if it has kept ones
    per_step = [event for layer in range(4) for event, happens in
                (("recurrence", layer in LAYOUT), ("attention", len(LAYOUT.get(layer, [])) < 4)) if happens]
    beside, req_beside = forced(lm, ids, mask, policy, True, monkeypatch)
    assert events[-len(per_step):] == per_step
    events.clear()
    monkeypatch.setattr(side_stream, "BESIDE", False)
    after, req_after = forced(lm, ids, mask, policy, True, monkeypatch)
    assert events[-len(per_step):] != per_step, "attention first, then the recurrence"
    assert_close("logits", after, beside, torch.float32)
    for layer in LAYOUT:
        (state, ), (other, ) = (r.cache.recurrent_state[layer].values() for r in (req_beside, req_after))
        assert_close("state", other, state, torch.float32)


@torch.no_grad()
def test_one_matmul_gives_the_kept_heads_and_the_stacks_projection(tmp_path):
    """The joint weight's rows are the fused q/k/v's kept heads, then the stack's; the stack's own weight
    becomes a view of that tail (held once) with its values unchanged."""
    lm, policy = wide_adapter("qwen2", tmp_path)
    parts = layers.model_parts(lm)
    heads = recurrent_groups.layer_heads(4, 8, 4, policy.recurrent_modules(lm), "cpu")[1]
    stack = next(iter(heads.units.values()))
    assert isinstance(stack, StackedRNN)
    before = stack.proj_weight.clone(), stack.proj_bias.clone()
    fused = parts.fusion(1).qkv
    joint = joint_projection.joint_projection(fused, heads, parts.head_dim)
    x = torch.randn(2, 5, lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    q, k, v, proj = joint(x)
    full = fused.output(x).view(2, 5, -1, parts.head_dim)  # 8 q heads, 4 k, 4 v
    assert q.shape[2] == 2 and k.shape[2] == v.shape[2] == 1  # group 2 is kept: its 2 query heads, 1 k, 1 v
    assert_close("q", full[:, :, 4:6], q, torch.float32)
    assert_close("k", full[:, :, 8 + 2:8 + 3], k, torch.float32)
    assert_close("v", full[:, :, 12 + 2:12 + 3], v, torch.float32)
    assert torch.equal(stack.proj_weight, before[0]) and torch.equal(stack.proj_bias, before[1])
    assert stack.proj_weight.untyped_storage().data_ptr() == joint.weight.untyped_storage().data_ptr()
    assert_close("projection", torch.nn.functional.linear(x, *before), proj, torch.float32)
    assert joint_projection.joint_projection(fused, heads, parts.head_dim) is joint, "built once"


def test_none_for_a_layer_without_one_stack_or_when_switched_off(monkeypatch, tmp_path):
    lm, policy = wide_adapter("llama", tmp_path)
    parts = layers.model_parts(lm)
    modules = policy.recurrent_modules(lm)
    stacked = recurrent_groups.layer_heads(4, 8, 4, modules, "cpu")
    alone = recurrent_groups.layer_heads(4, 8, 4, modules, "cpu", stack=False)  # training's units
    fused = parts.fusion(1).qkv
    assert joint_projection.joint_projection(fused, stacked[1], parts.head_dim) is not None
    assert joint_projection.joint_projection(fused, stacked[2], parts.head_dim) is None  # nothing replaced
    assert joint_projection.joint_projection(fused, alone[1], parts.head_dim) is None
    assert joint_projection.joint_projection(None, stacked[1], parts.head_dim) is None  # unfused model
    monkeypatch.setattr(joint_projection, "JOINT_QKV", False)
    assert joint_projection.joint_projection(fused, stacked[1], parts.head_dim) is None
