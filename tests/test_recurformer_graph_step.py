"""RecurFormer's decode step through the graphs (graphs.py): a layer with replaced groups runs no more
eager work than a plain layer, and requests that take turns on the graphs' state buffers keep their own
states (benchmarks/recurformer_step_cpu_ops.md)."""

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pyramid_core import generate
from pyramid_core.bench.harness import untrained_adapter
from pyramid_core.graphs import GraphStore, Replay
from pyramid_core.policies.registry import make_policy
from tests.tiny_models import tiny_model

LAYERS, STEPS = 3, 6
SHAPE = dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=8, intermediate_size=128)
REPLAY = Replay.__call__  # unpatched, whatever a test has patched it with
GROUPS = [[layer, group] for layer in range(LAYERS) for group in (layer, layer + 4)]  # 2 of 8 a layer, stacked


def model():
    return tiny_model("llama", layers=LAYERS, **SHAPE)


def prompt(batch=1, n=24, seed=0):
    return torch.randint(3, 97, (batch, n), generator=torch.Generator().manual_seed(seed))


class EagerOps(TorchDispatchMode):
    """The ops a decode step runs outside the graphs' replays (each launches a kernel or allocates on a
    GPU; views and the like included, they are Python work too), and the replays."""

    def __init__(self):
        super().__init__()
        self.ops, self.replays, self.in_replay = Counter(), 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.in_replay:
            self.ops[func.__name__] += 1
        return func(*args, **(kwargs or {}))


def warm_steps(lm, policy, monkeypatch) -> EagerOps:
    """Eager ops and replays of STEPS warm decode steps (after the prefill and the capture)."""
    log, replay = EagerOps(), REPLAY

    def counted(graph):
        log.replays += 1
        log.in_replay = True
        try:
            return replay(graph)
        finally:
            log.in_replay = False

    monkeypatch.setattr(Replay, "__call__", counted)
    records = generate(lm, prompt(), policy=policy, max_new_tokens=2 + STEPS, cuda_graphs=True)
    next(records), next(records)
    log.replays = 0
    with torch.inference_mode(), log:
        assert len(list(records)) == STEPS
    return log


def test_replaced_layers_run_nothing_eager_that_plain_layers_do_not(monkeypatch, tmp_path):
    """Regression guard (RecurFormer 25% decoded at 0.75x the baseline on an H200 with graphs): the
    groups' step, the merge of their output with the attention heads' and the state stay inside the
    graphs. A warm step replays two graphs a layer, as the baseline, and runs the baseline's eager ops
    plus one copy: the step's positions into the graphs' buffer. A separate recurrent graph, the
    merge's index_copy_ x2 and new_empty, or a state copied in and cloned out would all show here."""
    lm = model()
    base = warm_steps(lm, make_policy("baseline", {}), monkeypatch)
    adapter = untrained_adapter(lm, GROUPS, tmp_path)
    recur = warm_steps(lm, make_policy("recurformer", {"adapter": adapter}), monkeypatch)
    assert base.replays == recur.replays == STEPS * LAYERS * 2
    assert recur.ops - base.ops == Counter({"copy_.default": STEPS})
    assert not base.ops - recur.ops


def test_requests_taking_turns_on_the_graphs_keep_their_states(tmp_path):
    """Two requests stepping in turn on one set of graphs: each takes the state buffers from the other
    (the other's states move out into copies of its own) and decodes as it does eagerly; so does one
    whose graphs the store lets go (retire) while its states are in their buffers."""
    lm = model()
    policy = make_policy("recurformer", {"adapter": untrained_adapter(lm, GROUPS, tmp_path)})

    def tokens(ids, graphs):
        return generate(lm, ids, policy=policy, max_new_tokens=12, cuda_graphs=graphs)

    first, second, third = prompt(2, seed=1), prompt(2, seed=2), prompt(3, seed=3)
    eager = [[r.token_ids for r in tokens(ids, False)] for ids in (first, second, third)]
    lm.decode_graphs = GraphStore(capacity=1)  # the third request's batch size evicts the others' graphs
    runs = [tokens(ids, True) for ids in (first, second, third)]
    got = [[], [], []]
    for _ in range(12):
        for i, run in enumerate(runs):
            got[i].append(next(run).token_ids)  # one step each, in turn
    assert got == eager
