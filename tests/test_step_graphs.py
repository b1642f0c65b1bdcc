"""The whole decode step as one graph (step_graphs.py) is the per-layer path, token for token.

On a CPU the step graph is a plain call on the same buffers, so this checks the plumbing: the inputs
copied in, the slot every layer writes, attention over the whole reservation with the unwritten slots
masked, the cache's bookkeeping after the step, and which requests take the path; on a GPU the same
tests check the captured CUDA graph.
"""

import gc
import weakref

import pytest
import torch

from pyramid_core import evict_graphs, generate, step_graphs
from pyramid_core.policies.full import FullPolicy
from pyramid_core.policies.h2o import H2OPolicy
from pyramid_core.policies.registry import make_policy
from tests.test_graphs import left_padded
from tests.spies import count_calls
from tests.test_graphs import REPLACED, adapter  # noqa: F401  (a fixture)
from tests.tiny_models import tiny_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NEW = 20


@pytest.fixture
def spied(monkeypatch):
    """How many decode steps ran as the step graph, and how many captured it."""
    return count_calls(monkeypatch, step_graphs, "run", "capture")


def forced(lm, ids, mask, policy, fused: bool, monkeypatch, reserve: int | None = NEW + 5, recorded: int = -1):
    """Logits of the prefill and NEW decode steps fed the same random tokens (teacher-forced: two paths
    that differ in the last bits cannot drift apart on a near tie of a random model), and the request.
    recorded: the decode step (from 0) that records attention, which takes the per-layer path."""
    from pyramid_core.engine import start_request, step

    monkeypatch.setattr(step_graphs, "FUSED_STEP", fused)
    req = start_request(lm, ids, mask, policy, reserve)
    req.graphs = lm.decode_graphs
    feed = torch.randint(3, 97, (NEW, ids.shape[0]), generator=torch.Generator().manual_seed(1)).to(ids.device)
    logits = []
    with torch.inference_mode():
        logits.append(step(req, ids)[0])
        for i, t in enumerate(feed):
            req.record_attention = i == recorded
            logits.append(step(req, t)[0])
    return torch.stack(logits), req


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("lengths", [(30,), (45, 20, 33)])  # one row; left-padded rows
def test_the_step_graph_computes_what_the_per_layer_path_does(device, family, lengths, spied, monkeypatch):
    lm = tiny_model(family)
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded(lengths))
    on, req = forced(lm, ids, mask, FullPolicy(), True, monkeypatch)
    assert spied == {"run": NEW, "capture": 1}  # every decode step, captured once
    off, _ = forced(lm, ids, mask, FullPolicy(), False, monkeypatch)
    growing, _ = forced(lm, ids, mask, FullPolicy(), True, monkeypatch, reserve=None)
    assert spied["run"] == NEW
    # attention over the whole reservation (empty slots masked) sums in another order: the last bits differ
    assert (on - off).abs().max() < 1e-4 and (on - growing).abs().max() < 1e-4
    assert not torch.equal(on[1], on[2])  # the steps really differ


def test_the_cache_after_the_step_graph_is_the_per_layer_paths(monkeypatch):
    """Slots, counts and positions of every layer agree after the run; the reservation's unwritten tail
    stays empty."""
    lm = tiny_model("llama")
    ids, mask = left_padded((30, 18))
    _, fused = forced(lm, ids, mask, FullPolicy(), True, monkeypatch)
    _, plain = forced(lm, ids, mask, FullPolicy(), False, monkeypatch)
    assert fused.step_graph is not None and plain.step_graph is None
    for a, b in zip(fused.cache.layers, plain.cache.layers):
        n = a.length
        assert n == b.length and a.counts == b.counts and torch.equal(a.positions, b.positions)
        assert (a.keys[:, :, :n] - b.keys[:, :, :n]).abs().max() < 1e-4
        assert (a.positions[:, n:] == -1).all() and a.positions.shape[1] > n


@pytest.mark.parametrize("mode, knobs, lengths", [
    ("snapkv", {"kv_budget": 0.5, "window_size": 4}, (40, 40)),
    ("streaming", {"kv_budget": 0.5, "sink_len": 2}, (40, 40)),   # a ring: each step frees the oldest slot
    ("streaming", {"kv_budget": 0.5, "sink_len": 2}, (40, 27))])  # holes: each step compacts, on the host
def test_policies_whose_answers_need_no_tensor_of_the_step_take_it(mode, knobs, lengths, spied, monkeypatch):
    """SnapKV compresses once, after the prefill: its decode steps are the baseline's. Streaming answers
    every step with a window, which the cache carries out after the step's graph (a ring's bookkeeping, or
    a compaction). Both take the graph at every step, with the per-layer path's logits and cache."""
    lm = tiny_model("llama")
    ids, mask = left_padded(lengths)
    on, fused = forced(lm, ids, mask, make_policy(mode, knobs), True, monkeypatch)
    assert spied["run"] == NEW
    off, plain = forced(lm, ids, mask, make_policy(mode, knobs), False, monkeypatch)
    assert (on - off).abs().max() < 1e-4
    for a, b in zip(fused.cache.layers, plain.cache.layers):
        assert (a.length, a.counts, a.free, a.ring) == (b.length, b.counts, b.free, b.ring)
        assert torch.equal(a.positions, b.positions)
    if mode == "streaming" and lengths[0] == lengths[1]:
        assert fused.cache[0].ring is not None  # the ring really ran


@pytest.mark.parametrize("mode, knobs, lengths", [
    ("baseline", {}, (30, 18)),
    ("streaming", {"kv_budget": 0.5, "sink_len": 2}, (40, 40))])  # a ring: the token goes into a freed slot
def test_the_decode_kernel_in_the_step_graph_reads_the_slots_in_use(mode, knobs, lengths, monkeypatch):
    """On a GPU the step graph's attention is the Triton kernel over the whole reservation, told by a count
    in the graph's inputs how many slots are in use (step_graphs.slot_inputs); on a CPU the kernel runs in
    Triton's interpreter in its place. Its logits are the per-layer path's, and a count one short, which
    leaves each row's newest slot unread on an append, changes them."""
    from tests.triton_device import DEVICE  # skips where Triton cannot run
    from pyramid_core import attention

    lm = tiny_model("llama")
    lm.model.to(DEVICE)
    ids, mask = (t.to(DEVICE) for t in left_padded(lengths))
    policy = make_policy(mode, knobs)
    off, _ = forced(lm, ids, mask, policy, False, monkeypatch)
    monkeypatch.setattr(attention, "decode_kernel_supports", lambda q, k: True)  # the kernel on a CPU too
    on, fused = forced(lm, ids, mask, policy, True, monkeypatch)
    assert fused.step_graph is not None
    assert (on - off).abs().max() < 1e-4
    counts = step_graphs.slot_inputs
    monkeypatch.setattr(step_graphs, "slot_inputs", lambda req: [n - (i >= len(req.cache.layers))
                                                                for i, n in enumerate(counts(req))])
    short, _ = forced(lm, ids, mask, policy, True, monkeypatch)
    assert (short - off).abs().max() > 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_h2o_steady_steps_run_as_the_step_graph(device, spied, monkeypatch):
    """Once every layer is full, H2O writes each token into the slot it evicted at the step before and
    evicts again, on the device (EvictStep): those steps take the step graph, with the per-layer path's
    (its evict graphs') logits, held positions and next evictions. The first decode step, which makes the
    slot scores, and one that records attention run layer by layer."""
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((40, 40)))  # no holes: steady steps from the second on
    # a step that records attention runs layer by layer in between: the graph then loads that step's evictions
    on, fused = forced(lm, ids, mask, H2OPolicy(kv_budget=0.3), True, monkeypatch, recorded=9)
    graphed = spied["run"]
    off, plain = forced(lm, ids, mask, H2OPolicy(kv_budget=0.3), False, monkeypatch, recorded=9)
    assert graphed == NEW - 2
    assert (on - off).abs().max() < 1e-4
    for a, b in zip(fused.cache.layers, plain.cache.layers):
        assert (a.length, a.counts) == (b.length, b.counts)
        assert torch.equal(a.positions, b.positions) and torch.equal(a.evicted, b.evicted)


def test_it_needs_a_reserve_graphs_and_no_recording(spied):
    lm = tiny_model("llama")
    ids, mask = left_padded((25, 25))
    list(generate(lm, ids, mask, max_new_tokens=NEW, cuda_graphs=True))  # no reserve: slots grow
    list(generate(lm, ids, mask, max_new_tokens=NEW, cuda_graphs=False, reserve_kv=True))  # eager decoding
    list(generate(lm, ids, mask, max_new_tokens=NEW, cuda_graphs=True, reserve_kv=True, record_attention=True))
    assert spied["run"] == 0
    list(generate(lm, ids, mask, max_new_tokens=NEW, cuda_graphs=True, reserve_kv=True,
                  record_attention=lambda step: step < 5))  # records the first steps, then the graph
    assert spied["run"] == NEW - 5


def test_every_attention_call_runs_with_the_engines_backends(spied, monkeypatch):
    """The step graph's replays leave SDPA's backend context out (a CUDA graph calls no SDPA), so the
    capture and a CPU's replays set it themselves: every SDPA call of a generation, the prefill, the eager
    steps, the capture and the replays, runs with cuDNN's SDPA off, as the engine's ATTENTION_BACKENDS say."""
    sdpa, cudnn_on = torch.nn.functional.scaled_dot_product_attention, []

    def spy(*args, **kwargs):
        cudnn_on.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    lm = tiny_model("llama")
    ids, mask = left_padded((25, 25))
    list(generate(lm, ids, mask, max_new_tokens=NEW, cuda_graphs=True, reserve_kv=True,
                  record_attention=lambda step: step < 5))  # eager steps, then the capture and the replays
    assert spied["capture"] == 1 and spied["run"] == NEW - 5
    assert len(cudnn_on) == NEW * lm.config.num_hidden_layers and not any(cudnn_on)  # a call a layer a step
    assert torch.backends.cuda.cudnn_sdp_enabled()  # outside a generation the default stands


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("knobs", [{}, {"variant": "window", "twin_window": 8, "twin_sinks": 2}])
def test_recurformer_runs_its_groups_inside_the_step_graph(device, knobs, adapter, spied, monkeypatch):
    """RecurFormer (trained RNNs, or the sink + window twin) is silent at decode: its replaced groups run
    inside the step graph, their states advanced in the request's own buffers, as the per-layer path does."""
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((30, 24)))
    on, fused = forced(lm, ids, mask, make_policy("recurformer", {"adapter": adapter, **knobs}), True, monkeypatch)
    assert spied["run"] == NEW
    off, plain = forced(lm, ids, mask, make_policy("recurformer", {"adapter": adapter, **knobs}), False, monkeypatch)
    assert (on - off).abs().max() < 1e-4
    for layer, _ in REPLACED:
        for group, state in fused.cache.recurrent_state[layer].items():
            other = plain.cache.recurrent_state[layer][group]
            pairs = [(state, other)] if isinstance(state, torch.Tensor) else \
                [(getattr(state, f), getattr(other, f)) for f in state.__dataclass_fields__]
            assert all((a.float() - b.float()).abs().max() < 1e-4 for a, b in pairs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lengths", [(40,), (52, 30)])
def test_pyramidinfer_runs_its_quiet_steps_as_graphs(device, lengths, spied, monkeypatch):
    """PyramidInfer between its decode-time cuts answers no layer: each layer's attention row only joins
    its voters, which the step graph writes (VoterStep); a step where some layer cuts runs layer by layer.
    The two paths compute the same logits, keep the same tokens and leave the same voters and markers."""
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded(lengths))
    knobs = {"min_context_length": 8, "prefill_decay_ratio": 0.5, "chunk_length": 4}
    on, fused = forced(lm, ids, mask, make_policy("pyramid", knobs), True, monkeypatch)
    graphed = spied["run"]
    off, plain = forced(lm, ids, mask, make_policy("pyramid", knobs), False, monkeypatch)
    assert 0 < graphed < NEW  # quiet steps as graphs, the cuts' steps layer by layer
    assert (on - off).abs().max() < 1e-4
    assert fused.state.markers == plain.state.markers and fused.state.markers != [None] * 4
    for a, b in zip(fused.cache.layers, plain.cache.layers):
        assert a.length == b.length and a.counts == b.counts and torch.equal(a.positions, b.positions)
    a, b = fused.state.voters, plain.state.voters
    assert (a.count, a.clock) == (b.count, b.clock) and a.rows.keys() == b.rows.keys()
    for device in a.rows:
        assert (a.rows[device] - b.rows[device]).abs().max() < 1e-5 and a.rows[device].abs().sum() > 0


@pytest.mark.parametrize("mode", ["baseline", "h2o"])
def test_a_finished_request_goes_without_the_cycle_collector(mode, monkeypatch):
    """A request's step graph (and H2O's evict graphs) refer back to the request; once the generation
    ends they are dropped, so its KV goes with the last reference. Before, three 7B requests of 35 GB of
    reserved KV each waited for the collector and ran an H200 out of memory (benchmarks/modes/README.md)."""
    from pyramid_core import engine

    requests = []
    start = engine.start_request

    def kept(*args, **kwargs):
        req = start(*args, **kwargs)
        requests.append(weakref.ref(req))
        return req

    monkeypatch.setattr(engine, "start_request", kept)
    lm = tiny_model("llama")
    ids, mask = left_padded((30, 30))  # rows without holes: H2O's steady steps take its evict graphs
    policy = H2OPolicy(kv_budget=0.3) if mode == "h2o" else FullPolicy()
    graphs = count_calls(monkeypatch, evict_graphs if mode == "h2o" else step_graphs, "capture")
    gc.disable()
    try:
        # H2O without a reserve: its per-layer evict graphs (with one, its steps take the step graph)
        list(generate(lm, ids, mask, policy=policy, max_new_tokens=8, cuda_graphs=True, reserve_kv=mode != "h2o"))
        assert requests[0]() is None
    finally:
        gc.enable()
    assert graphs["capture"] > 0, "no graph was captured: the test would prove nothing"


def test_pyramidinfer_keeps_the_graph_when_its_voters_wrap_around_their_ring(spied, monkeypatch):
    """A planned generation's voters are a ring as wide as its widest window: once full, each new query
    row overwrites the oldest in the same buffer, so every step stays the same graph: with no cut in 45 new
    tokens every decode step runs as the graph, captured once, with the per-layer path's tokens."""
    from pyramid_core.policies.voter_rows import VoterRows

    slots, step = [], VoterRows.step
    monkeypatch.setattr(VoterRows, "step", lambda self, seen: slots.append(step(self, seen)) or slots[-1])
    lm = tiny_model("llama")
    ids, mask = left_padded((40, 40))
    knobs = {"min_context_length": 8, "chunk_length": 64}  # no decode-time cut in 45 tokens
    runs = {}
    for fused in (True, False):
        monkeypatch.setattr(step_graphs, "FUSED_STEP", fused)
        runs[fused] = [r.token_ids for r in generate(lm, ids, mask, policy=make_policy("pyramid", knobs),
                                                     max_new_tokens=45, cuda_graphs=True, reserve_kv=True)]
    assert 0 in slots  # the ring wrapped around its end
    assert spied["run"] == 44 and spied["capture"] == 1  # the same buffers throughout: captured once
    assert runs[True] == runs[False]
