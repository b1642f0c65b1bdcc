"""Decoding one step ahead (engine._steps_ahead): step i+1 is enqueued before step i's tokens are read back.
It must give the records of decoding step by step (tokens, finished rows, what the cache holds, the policy's
state), end where they end (EOS, max_new_tokens, a stop), and really enqueue before reading."""

import threading

import pytest
import torch

from pyramid_core import Sampling, engine, generate
from pyramid_core.policies.full import FullPolicy
from pyramid_core.policies.registry import make_policy
from tests.test_graphs import left_padded
from tests.tiny_models import tiny_model

POLICIES = [
    ("baseline", lambda: FullPolicy()),
    ("pyramid", lambda: make_policy("pyramid", {"min_context_length": 8, "prefill_decay_ratio": 0.5,
                                                "chunk_length": 4})),  # cuts at decode within the run
    ("h2o", lambda: make_policy("h2o", {"kv_budget": 0.4})),
    ("streaming", lambda: make_policy("streaming", {"kv_budget": 0.5, "sink_len": 2})),
]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # on CUDA: the pinned copy and its event
FIELDS = ("step", "phase", "token_ids", "finished", "kept_tokens_per_row", "kv_bytes", "peak_kv_bytes",
          "seen_tokens", "kept_positions", "policy")


def run(lm, ids, mask, policy, ahead: bool, **kwargs):
    return list(generate(lm, ids, mask, policy=policy, cuda_graphs=True, ahead=ahead, **kwargs))


def same_records(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert {f: getattr(x, f) for f in FIELDS} == {f: getattr(y, f) for f in FIELDS}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, policy", POLICIES)
@pytest.mark.parametrize("reserve_kv", [False, True])
def test_ahead_gives_the_records_of_step_by_step(device, name, policy, reserve_kv):
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((40, 27)))
    kwargs = dict(max_new_tokens=24, reserve_kv=reserve_kv)
    same_records(run(lm, ids, mask, policy(), True, **kwargs), run(lm, ids, mask, policy(), False, **kwargs))


@pytest.mark.parametrize("device", DEVICES)
def test_ahead_ends_at_eos_as_step_by_step(device):
    """Rows finish at different steps and are padded after; the run ends at the step where the last row
    finishes, though the step after it was already enqueued."""
    lm = tiny_model("llama")
    lm.model.to(device)
    ids, mask = (t.to(device) for t in left_padded((30, 22)))
    free = run(lm, ids, mask, FullPolicy(), False, max_new_tokens=30)
    eos = [free[3].token_ids[0], free[9].token_ids[1]]
    kwargs = dict(max_new_tokens=30, eos_token_id=eos, pad_token_id=0)
    serial = run(lm, ids, mask, FullPolicy(), False, **kwargs)
    assert len(serial) < 30 and serial[-1].finished == [True, True], "EOS must end the run early"
    same_records(run(lm, ids, mask, FullPolicy(), True, **kwargs), serial)


def test_seeded_sampling_ahead_repeats_step_by_step():
    lm = tiny_model("llama")
    ids, mask = left_padded((25, 25))
    kwargs = dict(max_new_tokens=20, sampling=Sampling(temperature=1.0, top_p=0.9, seed=7))
    same_records(run(lm, ids, mask, FullPolicy(), True, **kwargs), run(lm, ids, mask, FullPolicy(), False, **kwargs))


@pytest.mark.parametrize("ahead", [True, False])
def test_a_stop_makes_the_next_step_the_last(ahead):
    lm = tiny_model("llama")
    stop, records = threading.Event(), []
    for record in generate(lm, torch.tensor([[5, 6, 7]]), max_new_tokens=50, stop=stop, ahead=ahead):
        records.append(record)
        if len(records) == 3:
            stop.set()
    assert len(records) == 4


def test_the_next_step_is_enqueued_before_the_tokens_are_read(monkeypatch):
    """After the prefill: two steps enqueued, then the first read; from then on one step enqueued before
    each read, and none after the last."""
    events = []
    step, read = engine.step, engine.Launched.read
    monkeypatch.setattr(engine, "step", lambda req, tokens: events.append("step") or step(req, tokens))
    monkeypatch.setattr(engine.Launched, "read", lambda self: events.append("read") or read(self))
    lm = tiny_model("llama")
    records = list(generate(lm, torch.tensor([[5, 6, 7]]), max_new_tokens=6, ahead=True))
    assert len(records) == 6
    assert events == ["step"] + ["step", "step", "read"] + ["step", "read"] * 3 + ["read"]


def test_records_that_read_the_cache_decode_step_by_step(monkeypatch):
    """Attention, kept positions or the last step's detail read the cache after their step, which the next
    step would have changed: those runs do not decode ahead, and their records carry what was asked."""
    lm = tiny_model("llama")
    parts, cpu = engine.model_parts(lm), torch.device("cpu")
    assert engine.decodes_ahead(True, parts, cpu, False, False, False)
    assert not engine.decodes_ahead(None, parts, cpu, False, False, False)  # a CPU only when asked
    for recording in ((True, False, False), (False, True, False), (False, False, True), (lambda i: False,) * 2):
        assert not engine.decodes_ahead(True, parts, cpu, *recording)
    reads = []
    read = engine.Launched.read
    monkeypatch.setattr(engine.Launched, "read", lambda self: reads.append(1) or read(self))
    records = list(generate(lm, torch.tensor([[5, 6, 7]]), max_new_tokens=4, ahead=True, record_attention=True,
                            record_positions=True))
    assert not reads
    assert all(r.attention and r.kept_positions for r in records)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a stream's waits exist on a GPU only")
@pytest.mark.parametrize("name, policy", POLICIES)
def test_a_replayed_step_never_waits_for_the_gpu(name, policy, monkeypatch):
    """A step launched ahead must not wait for the step before it: nothing between a step graph's inputs and
    its replay may synchronise the stream (each step's slot indices, copied from pageable memory, did). Under
    torch's sync debug mode a wait raises."""
    from pyramid_core import step_graphs

    replayed = []
    run_graph = step_graphs.run

    def strict(req, tokens, quiet):
        if req.step_graph is None:  # the capture's own warm-up may wait
            return run_graph(req, tokens, quiet)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return run_graph(req, tokens, quiet)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            replayed.append(name)

    monkeypatch.setattr(step_graphs, "run", strict)
    lm = tiny_model("llama")
    lm.model.to("cuda")
    # rows of one length: a streaming ring then frees the same slot in each (uneven rows compact on the device)
    ids, mask = (t.to("cuda") for t in left_padded((40, 40)))
    run(lm, ids, mask, policy(), True, max_new_tokens=24, reserve_kv=True)
    assert len(replayed) >= 8, "too few replayed steps to show anything"
