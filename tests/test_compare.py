"""compare(): several modes on one prompt, advanced in turn, each exactly as if it ran alone."""

from __future__ import annotations

import threading

import pytest

from pyramid_core.compare import compare
from pyramid_core.engine import Sampling
from pyramid_core.models import wrap_model
from pyramid_core.policies import FullPolicy, PyramidPolicy, StreamingPolicy
from pyramid_core.pipeline import stream_generation
from tests.tiny_models import tiny_model, tiny_tokenizer

PROMPT = "the cat sat on the mat and a dog ran far away " * 4


@pytest.fixture(scope="module")
def lm():
    model = tiny_model("llama").model
    model.generation_config.eos_token_id = None  # random weights may pick EOS at any step: run to the limit
    return wrap_model(model, tokenizer=tiny_tokenizer(), name="tiny-llama")


def modes():
    # small enough knobs that pyramid and streaming really drop tokens on a ~60-token prompt
    return {"baseline": FullPolicy(),
            "pyramid": PyramidPolicy(min_context_length=4, prefill_decay_ratio=0.3, chunk_length=4),
            "streaming": StreamingPolicy(kv_budget=0.4)}


def lone(lm, policy, max_new_tokens, sampling, **options):
    return list(stream_generation(lm, PROMPT, policy, max_new_tokens, sampling,
                                  record_attention=True, record_positions=True, **options))


def test_round_robin_order(lm):
    out = list(compare(lm, PROMPT, modes(), 5, Sampling()))
    assert [m for m, _ in out] == ["baseline", "pyramid", "streaming"] * 5
    assert [r.step for _, r in out] == [s for s in range(5) for _ in range(3)]


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=1.0, top_p=0.9, seed=7)],
                         ids=["greedy", "seeded-sampling"])
def test_each_mode_equals_a_lone_run(lm, sampling):
    out = list(compare(lm, PROMPT, modes(), 12, sampling))
    for mode, policy in modes().items():
        together = [r for m, r in out if m == mode]
        alone = lone(lm, policy, 12, sampling)
        assert [r.token_ids for r in together] == [r.token_ids for r in alone], mode
        assert [r.kept_tokens for r in together] == [r.kept_tokens for r in alone], mode
        assert [r.kept_positions for r in together] == [r.kept_positions for r in alone], mode
        assert [r.kv_bytes for r in together] == [r.kv_bytes for r in alone], mode
    # the modes really differ, so the equality above is not trivially about one shared cache
    by_mode = {m: [r.kv_bytes for mm, r in out if mm == m][-1] for m in modes()}
    assert by_mode["pyramid"] < by_mode["baseline"] and by_mode["streaming"] < by_mode["baseline"]


def test_records_carry_attention_and_positions(lm):
    out = list(compare(lm, PROMPT, {"baseline": FullPolicy()}, 3, Sampling()))
    assert all(r.attention is not None and r.kept_positions is not None for _, r in out)
    out = list(compare(lm, PROMPT, {"baseline": FullPolicy()}, 3, Sampling(), record_attention=False,
                       record_positions=False))
    assert all(r.attention is None for _, r in out)
    assert [r.kept_positions is not None for _, r in out] == [True, False, False]  # the prefill always has them


def test_a_mode_that_finishes_early_drops_out(lm):
    base = [r.token_ids[0] for r in lone(lm, FullPolicy(), 12, Sampling())]
    other = [r.token_ids[0] for r in lone(lm, modes()["streaming"], 12, Sampling())]
    first = lambda ids, t: ids.index(t) if t in ids else len(ids)  # noqa: E731
    eos = next((t for t in base if first(base, t) < first(other, t)), None)
    if eos is None:
        pytest.skip("the tiny model's baseline emits no token before streaming does")
    lm.model.generation_config.eos_token_id = eos
    try:
        out = list(compare(lm, PROMPT, {"baseline": FullPolicy(), "streaming": modes()["streaming"]}, 12, Sampling()))
    finally:
        lm.model.generation_config.eos_token_id = None
    baseline = [r for m, r in out if m == "baseline"]
    streaming = [r for m, r in out if m == "streaming"]
    assert len(baseline) == first(base, eos) + 1 and baseline[-1].finished == [True]
    assert len(streaming) > len(baseline)  # went on alone
    assert [m for m, _ in out][2 * len(baseline):] == ["streaming"] * (len(streaming) - len(baseline))


def test_stop_ends_every_mode(lm):
    stop = threading.Event()
    seen = []
    for mode, record in compare(lm, PROMPT, modes(), 50, Sampling(), stop=stop):
        seen.append((mode, record.step))
        if len(seen) == 4:  # the three prefills and the baseline's first decode step
            stop.set()
    # every mode takes one more step once it sees the stop, and that step is its last
    assert seen == [("baseline", 0), ("pyramid", 0), ("streaming", 0), ("baseline", 1), ("pyramid", 1),
                    ("streaming", 1), ("baseline", 2)]


def test_errors_surface_before_any_decoding(lm):
    with pytest.raises(ValueError, match="empty"):
        list(compare(lm, "   ", modes(), 4, Sampling()))
    with pytest.raises(ValueError, match="context"):
        list(compare(lm, "the cat " * 600, modes(), 4, Sampling()))

