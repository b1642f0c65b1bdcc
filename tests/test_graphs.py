"""Decode steps through graphs.DecodeGraphs are the eager decode steps, token for token.

On a CPU the graphs are plain calls on the same fixed buffers, so this checks the plumbing (inputs
copied in, outputs read back, one layer's output feeding the next); on a GPU the same test checks the
captured CUDA graphs.
"""

import pytest
import torch

from pyramid_core import generate
from pyramid_core.graphs import GraphStore
from pyramid_core.policies.registry import make_policy
from tests.test_recurformer_engine import make_adapter, make_tapped_adapter
from tests.tiny_models import tiny_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MODES = {"baseline": {}, "pyramid": {"min_context_length": 8, "prefill_decay_ratio": 0.5},
         "recurformer": {}, "pyramid+recurformer": {"min_context_length": 8},
         "recurformer-window": {"variant": "window", "twin_window": 8, "twin_sinks": 2}}  # fills its window
REPLACED = [[1, 0], [3, 1]]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tiny_model("llama"), tmp_path_factory.mktemp("adapter"), REPLACED)


@pytest.fixture(scope="module")
def tapped_adapter(tmp_path_factory):
    """Same groups, other weights, and RNNs that also read the 2 previous values (state with extra rows)."""
    return make_tapped_adapter(tiny_model("llama"), tmp_path_factory.mktemp("tapped"), REPLACED, seed=5)


def left_padded(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, -n:], mask[row, -n:] = torch.randint(3, 97, (n,), generator=gen), 1
    return ids, mask


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("lengths", [(70, 70), (45, 90, 70)])
def test_decode_through_graphs_equals_eager(device, mode, lengths, adapter):
    lm = tiny_model("llama")
    lm.model.to(device)
    knobs = dict(MODES[mode], **({"adapter": adapter} if "recurformer" in mode else {}))
    ids, mask = (t.to(device) for t in left_padded(lengths))
    assert run(lm, ids, mask, mode.split("-")[0], knobs, graphs=True) == run(lm, ids, mask, mode.split("-")[0], knobs)
    (key, graphs), = lm.decode_graphs.entries.items()  # the graphs were made and used
    assert key[0] == len(lengths) and len(graphs.pre_graphs) == lm.config.num_hidden_layers
    replaced = {layer for layer, _ in REPLACED} if "recurformer" in mode else set()
    assert [bool(s) for s in graphs.states] == [i in replaced for i in range(len(graphs.pre_graphs))]


def run(lm, ids, mask, mode, knobs, graphs=False):
    records = generate(lm, ids, mask, policy=make_policy(mode, knobs), max_new_tokens=40, cuda_graphs=graphs)
    return [(r.token_ids, r.kept_tokens_per_row) for r in records]


@pytest.mark.parametrize("device", DEVICES)
def test_graphs_of_one_adapter_never_serve_another(device, adapter, tapped_adapter):
    """The recurrent graphs bind their adapter's weights: a second adapter of the same groups (here with
    taps too) gets graphs of its own, and each adapter's steps through graphs equal its eager steps."""
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((45, 90, 70)))
    eager = {a: run(lm, ids, mask, "recurformer", {"adapter": a}) for a in (adapter, tapped_adapter)}
    assert eager[adapter] != eager[tapped_adapter]
    for a in (adapter, tapped_adapter, adapter):
        assert run(lm, ids, mask, "recurformer", {"adapter": a}, graphs=True) == eager[a]
    assert len(lm.decode_graphs.entries) == 2


def test_store_keeps_the_most_recent_few():
    store, built = GraphStore(capacity=2), []

    class Graphs:
        retired = 0

        def retire(self):  # what the store asks of the graphs it lets go
            self.retired += 1

    def build(key):
        built.append((key, Graphs()))
        return built[-1][1]

    for key in ("a", "b", "a", "c", "b"):
        store.get(key, lambda k=key: build(k))
    assert [key for key, _ in built] == ["a", "b", "c", "b"]  # "a" was reused; "b" had been evicted by "c"
    assert list(store.entries) == ["c", "b"]
    assert [g.retired for _, g in built] == [1, 1, 0, 0]
