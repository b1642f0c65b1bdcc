"""H2O's steady decode steps as one graph a layer (evict_graphs.py) are the eager steps, token for token.

On a CPU the graphs are plain calls on the same buffers, which checks the plumbing (the slot buffer read
first and overwritten last, the cache's bookkeeping, recapture when a buffer changes); on a GPU the same
tests check the captured CUDA graphs.
"""

import pytest
import torch

from pyramid_core import evict_graphs, generate
from pyramid_core.policies.h2o import H2OPolicy
from tests.test_graphs import left_padded
from tests.spies import count_calls
from tests.tiny_models import tiny_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def spied(monkeypatch):
    """Counts of captures and of layer steps run as evict graphs."""
    return count_calls(monkeypatch, evict_graphs, "capture", "steady_layer")


def run(lm, ids, mask, policy, graphs, **kwargs):
    """Per step: tokens, kept positions of row 0 per layer, attention records of row 0 (weights as tensors)."""
    out = []
    for r in generate(lm, ids, mask, policy=policy, max_new_tokens=24, cuda_graphs=graphs, record_positions=True,
                      record_attention=True, **kwargs):
        attention = [(a.layer, a.positions, torch.tensor(a.weights)) for a in r.attention or []]
        out.append((r.token_ids, r.kept_positions, attention))
    return out


def assert_alike(got, expected):
    """The same tokens, kept positions and attended positions at every step, and the same attention weights
    to float noise: on a GPU the graphs' kernels and the eager path's sum in another order (~5e-7 apart,
    which rounding to 4 places turned into a difference now and then)."""
    assert len(got) == len(expected)
    for step, ((tokens, kept, attention), (tokens_e, kept_e, attention_e)) in enumerate(zip(got, expected)):
        assert (tokens, kept) == (tokens_e, kept_e), step
        assert [(layer, pos) for layer, pos, _ in attention] == [(layer, pos) for layer, pos, _ in attention_e], step
        for (_, _, weights), (_, _, weights_e) in zip(attention, attention_e):
            torch.testing.assert_close(weights, weights_e, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
# batch 2 and 3; the whole prompt kept (the first eviction at the first decode step); every held token
# recent (the recent window decides: ties at ALWAYS) and none recent (the scores decide alone)
@pytest.mark.parametrize("lengths,share,recent", [((50, 50), 0.3, 0.5), ((64, 64, 64), 0.2, 0.25),
                                                  ((40, 40), 1.0, 0.5), ((30, 30), 0.5, 1.0), ((30, 30), 0.5, 0.0)])
def test_steady_steps_through_evict_graphs_equal_eager_ones(device, lengths, share, recent, spied):
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded(lengths))
    policy = H2OPolicy(kv_budget=share, recent_share=recent)
    eager = run(lm, ids, mask, policy, graphs=False)
    assert spied == {"capture": 0, "steady_layer": 0}
    assert_alike(run(lm, ids, mask, policy, graphs=True), eager)
    layers = lm.config.num_hidden_layers
    # the first decode step makes the slot scores on the eager path; every later one is a graph's
    assert spied["capture"] == layers and spied["steady_layer"] == layers * (24 - 2)


@pytest.mark.parametrize("device", DEVICES)
def test_rows_with_holes_stay_eager_and_match(device, spied):
    """Left-padded rows of unequal lengths hold empty slots: the cache is not steady, so the eager path runs."""
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((45, 90, 70)))
    policy = H2OPolicy(kv_budget=0.3)
    assert_alike(run(lm, ids, mask, policy, graphs=True), run(lm, ids, mask, policy, graphs=False))
    assert spied["steady_layer"] == 0


@pytest.mark.parametrize("device", DEVICES)
def test_last_step_detail_through_evict_graphs(device):
    """detail_last: the final record's attention, made after the graphed step, is the eager one's."""
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((50, 50)))
    policy = H2OPolicy(kv_budget=0.3)

    def last(graphs):
        *_, final = generate(lm, ids, mask, policy=policy, max_new_tokens=12, cuda_graphs=graphs, detail_last=True)
        return final.kept_positions, [(a.layer, a.positions, a.weights) for a in final.attention]

    eager, graphed = last(False), last(True)
    assert graphed[0] == eager[0]
    for (layer, positions, weights), (layer_e, positions_e, weights_e) in zip(graphed[1], eager[1]):
        assert (layer, positions) == (layer_e, positions_e)
        assert torch.allclose(torch.tensor(weights), torch.tensor(weights_e), atol=1e-5)


def test_a_changed_buffer_is_captured_again():
    """The binding compares buffers by identity and sizes by value: another tensor in any place recaptures."""
    keys, scores = torch.zeros(2), torch.zeros(2)
    old = (("graphs", keys, scores), (10, True))
    assert evict_graphs.same(old, (("graphs", keys, scores), (10, True)))
    assert not evict_graphs.same(old, (("graphs", keys.clone(), scores), (10, True)))
    assert not evict_graphs.same(old, (("graphs", keys, scores), (11, True)))


def test_a_row_that_ends_early_keeps_the_graphs_and_the_tokens(spied):
    """A row that produced EOS goes on with pads while the other decodes: the same tokens either way."""
    lm = tiny_model("llama")
    ids, mask = left_padded((50, 50))
    policy = H2OPolicy(kv_budget=0.3)
    eos = run(lm, ids, mask, policy, graphs=False)[6][0][1]  # row 1's token at step 6: it ends there
    eager = run(lm, ids, mask, policy, graphs=False, eos_token_id=eos, pad_token_id=0)
    assert [tokens[1] for tokens, _, _ in eager[7:]] == [0] * (len(eager) - 7)  # row 1 padded from then on
    assert_alike(run(lm, ids, mask, policy, graphs=True, eos_token_id=eos, pad_token_id=0), eager)
    assert spied["steady_layer"] > 0


def test_the_bench_variant_h2o_eager_never_takes_the_graphs(spied):
    """`bench modes --modes h2o,h2o-eager` pairs the two in the same rounds: the variant keeps every step eager
    and decodes the same tokens."""
    from pyramid_core.bench.modes import mode_policies

    lm = tiny_model("llama")
    ids, mask = left_padded((50, 50))
    policies = mode_policies(lm, ["h2o", "h2o-eager"], "tiny", None)
    eager = run(lm, ids, mask, policies["h2o-eager"], graphs=True)
    assert spied["steady_layer"] == 0
    assert_alike(run(lm, ids, mask, policies["h2o"], graphs=True), eager)
    assert spied["steady_layer"] > 0


def test_two_requests_taking_turns_share_the_decode_graphs_and_keep_their_own(spied):
    """Two users' H2O requests stepping in turn on one model: the same decode graphs (q, k, v, positions), each
    request its own evict graphs; each decodes what it decodes alone."""
    lm = tiny_model("llama")
    policy = H2OPolicy(kv_budget=0.3)
    prompts = [left_padded((50, 50), seed=seed) for seed in (1, 2)]

    def alone(ids, mask):
        return [r.token_ids for r in generate(lm, ids, mask, policy=policy, max_new_tokens=16, cuda_graphs=True)]

    want = [alone(*p) for p in prompts]
    spied["steady_layer"] = 0
    runs = [generate(lm, ids, mask, policy=policy, max_new_tokens=16, cuda_graphs=True) for ids, mask in prompts]
    got = [[], []]
    for _ in range(16):
        for i, run_ in enumerate(runs):
            got[i].append(next(run_).token_ids)
    assert got == want
    assert len(lm.decode_graphs.entries) == 1 and spied["steady_layer"] == 2 * lm.config.num_hidden_layers * (16 - 2)
