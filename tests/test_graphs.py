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
from tests.test_recurformer_engine import make_adapter
from tests.tiny_models import tiny_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MODES = {"baseline": {}, "pyramid": {"min_context_length": 8, "prefill_decay_ratio": 0.5},
         "recurformer": {}, "pyramid+recurformer": {"min_context_length": 8}}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tiny_model("llama"), tmp_path_factory.mktemp("adapter"), [[1, 0], [3, 1]])


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
    runs = {}
    for graphs in (False, True):
        records = list(generate(lm, ids, mask, policy=make_policy(mode, knobs), max_new_tokens=40,
                                cuda_graphs=graphs))
        runs[graphs] = [(r.token_ids, r.kept_tokens_per_row) for r in records]
    assert runs[True] == runs[False]
    (key, graphs), = lm.decode_graphs.entries.items()  # the graphs were made and used
    assert key[0] == len(lengths) and len(graphs.pre_graphs) == lm.config.num_hidden_layers


def test_store_keeps_the_most_recent_few():
    store, built = GraphStore(capacity=2), []

    def build(key):
        built.append(key)
        return key

    for key in ("a", "b", "a", "c", "b"):
        store.get(key, lambda k=key: build(k))
    assert built == ["a", "b", "c", "b"]  # "a" was reused; "b" had been evicted by "c"
    assert list(store.entries) == ["c", "b"]
