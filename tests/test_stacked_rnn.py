"""A layer's replaced groups stacked into one recurrence (recurformer/stacked.py) equal the groups run
one by one: outputs and states, at prefill and over several decode steps, in the module and in the
engine (eager and through the decode graphs)."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from pyramid_core import generate, recurrent_groups
from pyramid_core.engine import teacher_forced_logits
from pyramid_core.policies import RecurFormerPolicy
from pyramid_core.recurformer import Adapter, GroupRNN, save_adapter
from pyramid_core.recurformer.adapter import rnn_config
from pyramid_core.recurformer.stacked import StackedRNN, stack
from tests.test_recurformer import assert_close
from tests.tiny_models import tiny_model

WIDE = dict(num_attention_heads=8, num_key_value_heads=4)  # G = 2 query heads per group, 4 groups a layer


@torch.no_grad()
def randomise_state_params(rnn, gen):
    """Decay, read-out scale, skip and taps away from their initial values, so that every term of a step
    shows in a comparison (also used by test_recurformer_step_kernel.py)."""
    rnn.decay.weight.normal_(0, 0.3, generator=gen)
    rnn.decay.bias.normal_(2, 0.5, generator=gen)
    rnn.out_weight.normal_(1, 0.3, generator=gen)
    rnn.skip.normal_(0, 0.5, generator=gen)
    if rnn.taps is not None:
        rnn.taps.normal_(0, 0.5, generator=gen)


def random_groups(lm, layer: int, groups: list[int], taps: int = 1, seed: int = 0) -> list[GroupRNN]:
    """GroupRNNs of the layer's groups with every parameter made to matter, each group's different."""
    base, cfg = lm.model.model, rnn_config(lm, taps=taps)
    rnns = []
    for i, group in enumerate(groups):
        rnn = GroupRNN.from_attention(base.layers[layer].self_attn, base.rotary_emb, group, cfg)
        randomise_state_params(rnn, torch.Generator().manual_seed(seed + i))
        rnns.append(rnn.eval().requires_grad_(False))
    return rnns


def inputs(lm, batch: int, T: int, seed: int = 3):
    """x [B, T + 4, C] and positions with left pads on rows after the first (row r: 5 * r pads)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T + 4, lm.config.hidden_size, generator=gen)
    pos = torch.arange(T + 4).repeat(batch, 1) - 5 * torch.arange(batch)[:, None]
    return x, pos.masked_fill(pos < 0, -1)


@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("groups", [[2], [0, 2], [0, 2, 3]], ids=lambda g: f"n{len(g)}")
@pytest.mark.parametrize("family, taps", [("llama", 1), ("qwen2", 3), ("qwen3", 1)])
def test_stack_equals_its_groups_one_by_one(family, taps, groups, batch):
    """Prefill 67 tokens (left pads on some rows), then 4 decode steps: each output and state equals
    the groups' own, concatenated (outputs on the last dim, states on the head dim)."""
    lm = tiny_model(family, **WIDE)
    rnns = random_groups(lm, 1, groups, taps)
    fused = StackedRNN(rnns)
    x, pos = inputs(lm, batch, 67)
    with torch.no_grad():
        refs = [rnn(x[:, :67], pos[:, :67]) for rnn in rnns]
        y, state = fused(x[:, :67], pos[:, :67])
        assert_close("prefill y", torch.cat([r[0] for r in refs], -1), y, torch.float32)
        assert_close("prefill state", torch.cat([r[1] for r in refs], 1), state, torch.float32)
        ref_states = [r[1] for r in refs]
        for t in range(67, 71):
            steps = [rnn.step(x[:, t:t + 1], pos[:, t:t + 1], s) for rnn, s in zip(rnns, ref_states)]
            ref_states = [s for _, s in steps]
            y, state = fused.step(x[:, t:t + 1], pos[:, t:t + 1], state)
            assert_close(f"step {t} y", torch.cat([y for y, _ in steps], -1), y, torch.float32)
            assert_close(f"step {t} state", torch.cat(ref_states, 1), state, torch.float32)
    assert state.shape == (batch, len(groups) * 2, rnns[0].cfg.head_dim + taps - 1, rnns[0].cfg.head_dim)


def test_a_step_launches_as_many_ops_for_three_groups_as_for_two():
    """The stacked step has no loop over groups: its op count does not grow with them."""
    lm = tiny_model("llama", **WIDE)
    x, pos = inputs(lm, 2, 0)

    def ops(groups):
        fused = StackedRNN(random_groups(lm, 1, groups))
        state = fused.init_state(2)
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fused.step(x[:, :1], pos[:, :1], state)
        return len([e for e in prof.events() if e.name.startswith("aten::")])

    assert ops([0, 2]) == ops([0, 1, 3])


def test_a_stack_is_built_once_and_rebuilt_when_a_group_changes():
    lm = tiny_model("llama", **WIDE)
    rnns = random_groups(lm, 1, [0, 2])
    first = stack(rnns)
    assert stack(rnns) is first
    with torch.no_grad():
        rnns[1].skip.add_(1.0)
    second = stack(rnns)
    assert second is not first
    assert torch.equal(second.skip[2:], rnns[1].skip)


# ----------------------------------------------------------------------------- in the engine

LAYOUT = {0: [0, 1, 3], 2: [1, 2], 3: [2]}  # layer 0 loses 3 of 4 groups, layer 2 two, layer 3 one; layer 1 none


def save_random_adapter(lm, layout: dict, taps: int, directory) -> str:
    """An adapter of random GroupRNNs over layout {layer: [groups]}, saved in directory."""
    state, pairs = {}, []
    for layer, groups in layout.items():
        for group, rnn in zip(groups, random_groups(lm, layer, groups, taps, seed=10 * layer)):
            state.update({f"{layer}.{group}.{k}": v for k, v in rnn.state_dict().items()})
            pairs.append([layer, group])
    save_adapter(Adapter(lm.name, sorted(pairs), rnn_config(lm, taps=taps).to_dict(), state), directory)
    return str(directory)


@pytest.fixture(scope="module", params=[1, 3], ids=lambda t: f"taps{t}")
def wide(request, tmp_path_factory):
    """A tiny model with 4 KV groups a layer and an adapter of random GroupRNNs over LAYOUT."""
    lm = tiny_model("llama", **WIDE)
    return lm, save_random_adapter(lm, LAYOUT, request.param, tmp_path_factory.mktemp("wide"))


def one_by_one(monkeypatch):
    """Make the engine run each replaced group alone (the reference)."""
    monkeypatch.setattr(recurrent_groups, "layer_units", lambda replaced: {(g, ): replaced[g] for g in sorted(replaced)})


def test_engine_logits_equal_the_groups_run_one_by_one(wide, monkeypatch):
    lm, adapter = wide
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 97, (3, 40), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :6], mask[2, :13] = 0, 0
    forced = torch.randint(3, 97, (3, 6), generator=gen)
    policy = RecurFormerPolicy(adapter=adapter)
    heads = recurrent_groups.layer_heads(4, 8, 4, policy.recurrent_modules(lm), "cpu")
    assert [None if h is None else list(h.units) for h in heads] == [[(0, 1, 3)], None, [(1, 2)], [(2, )]]
    # a lone group runs as a stack of one too: its decode step is then the fused kernel on a GPU
    assert all(type(m) is StackedRNN for h in heads if h is not None for m in h.units.values())
    fused = teacher_forced_logits(lm, ids, forced, policy, mask)
    one_by_one(monkeypatch)
    assert_close("logits", teacher_forced_logits(lm, ids, forced, policy, mask), fused, torch.float32)


@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
def test_stacked_decode_through_graphs_gives_the_groups_tokens(wide, batch, monkeypatch):
    lm, adapter = wide
    ids = torch.randint(3, 97, (batch, 30), generator=torch.Generator().manual_seed(batch))
    policy = RecurFormerPolicy(adapter=adapter)

    def tokens(graphs):
        return [r.token_ids for r in generate(lm, ids, policy=policy, max_new_tokens=12, cuda_graphs=graphs)]

    fused_graphs, fused_eager = tokens(True), tokens(False)
    one_by_one(monkeypatch)
    assert fused_graphs == fused_eager == tokens(False)
