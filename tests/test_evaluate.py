"""The quality measures on tiny, hand-checkable inputs; the embedded model loads offline and generates."""

import math

import pytest
import torch

from pyramid_core import evaluate as ev
from pyramid_core.engine import generate
from pyramid_core.policies import PyramidPolicy, StreamingPolicy
from pyramid_core.trace import StepRecord
from tests.tiny_models import tiny_model


@pytest.mark.parametrize("tokens, reference, expected", [
    ([1, 2, 3, 4], [1, 2, 3, 4], (1.0, 1.0)),
    ([1, 2, 9, 4], [1, 2, 3, 4], (0.5, 0.75)),
    ([9, 2, 3, 4], [1, 2, 3, 4], (0.0, 0.75)),
    ([1, 2], [1, 2, 3, 4], (0.5, 0.5)),  # missing positions count as different
])
def test_greedy_agreement(tokens, reference, expected):
    assert ev.greedy_agreement(tokens, reference) == expected


def test_greedy_agreement_rejects_an_empty_reference():
    with pytest.raises(ValueError, match="empty"):
        ev.greedy_agreement([1], [])


def test_perplexity_of_known_nlls():
    assert ev.perplexity(0.0) == 1.0
    assert ev.perplexity(math.log(23.3)) == pytest.approx(23.3)


def test_continuation_nll_equals_the_hf_forward():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids).logits, -1)  # [2, 30, V]
    # token t is predicted by position t - 1; the continuation is tokens 22..29
    expected = -logp[:, 21:29].gather(-1, ids[:, 22:, None]).mean().item()
    assert ev.continuation_nll(lm, ids[:, :22], ids[:, 22:]) == pytest.approx(expected, abs=1e-4)


def test_continuation_nll_changes_when_the_policy_drops_context():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (1, 60), generator=torch.Generator().manual_seed(1))
    full = ev.continuation_nll(lm, ids[:, :50], ids[:, 50:])
    cut = ev.continuation_nll(lm, ids[:, :50], ids[:, 50:], StreamingPolicy(kv_budget=0.2))
    assert abs(full - cut) > 1e-3


def test_measured_kv_share_of_a_hand_made_record():
    record = StepRecord(step=0, phase="prefill", token_ids=[5], finished=[False], kept_tokens=[10, 5, 5],
                        kept_tokens_per_row=[[10, 5, 5]], kv_bytes=0, peak_kv_bytes=0, step_time_s=0.0,
                        seen_tokens=10)
    assert ev.measured_kv_share(record) == pytest.approx((1.0 + 0.5 + 0.5) / 3)


def test_measured_share_of_streaming_is_its_budget():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (1, 100), generator=torch.Generator().manual_seed(2))
    records = list(generate(lm, ids, policy=StreamingPolicy(kv_budget=0.3), max_new_tokens=4))
    assert ev.measured_kv_share(records[0]) == pytest.approx(0.3)
    assert ev.share_summary(records)["final"] == pytest.approx(round(0.3 * 103) / 103)


def test_build_probes_places_span_filler_and_cue():
    layout = ev.ProbeLayout(prefix=3, span=5, cue=2, filler=4)
    window = list(range(100, 100 + layout.window))  # 3 + 5 + 4 + 5 tokens
    probe, control = ev.build_probes(window, layout, bos=0)
    assert probe.ids == [0, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 103, 104]
    assert probe.target == [105, 106, 107]
    assert probe.span_start == 4 and probe.ids[probe.span_start] == 103
    # the control shows other text (the window's last 5 tokens) where the span was: same cue and target
    assert control.ids == [0, 100, 101, 102, 112, 113, 114, 115, 116, 108, 109, 110, 111, 103, 104]
    assert control.target == probe.target and 105 not in control.ids


def test_spaced_windows_cover_the_text_evenly():
    ids = list(range(100))
    assert ev.spaced_windows(ids, 10, 3) == [list(range(0, 10)), list(range(30, 40)), list(range(60, 70))]
    assert ev.spaced_windows(ids, 10, 3, offset=0.5)[0][0] == 15
    with pytest.raises(ValueError):
        ev.spaced_windows(ids, 40, 3)


def test_copy_scores_equal_greedy_generation():
    """Exact copy is read off teacher-forced argmaxes: it must agree with real greedy decoding."""
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (1, 20), generator=torch.Generator().manual_seed(3))
    greedy = [r.token_ids[0] for r in generate(lm, ids, max_new_tokens=6)]
    own = ev.Probe(ids[0].tolist(), greedy, 0)
    scores = ev.copy_scores(lm, [own], k=6)
    assert scores["accuracy"] == 1.0 and scores["exact_copy_6"] == 1.0
    wrong = greedy[:3] + [(greedy[3] + 1) % 97] + greedy[4:]
    scores = ev.copy_scores(lm, [ev.Probe(own.ids, wrong, 0)], k=3)
    assert scores["exact_copy_3"] == 1.0
    assert ev.copy_scores(lm, [ev.Probe(own.ids, wrong, 0)], k=4)["exact_copy_4"] == 0.0


def test_pyramid_for_budget_falls_back_only_when_out_of_reach():
    policy, knobs = ev.pyramid_for_budget(0.9, 1024, 12)
    assert knobs == {} and policy.kv_budget == 0.9
    policy, knobs = ev.pyramid_for_budget(0.3, 1024, 12)
    assert knobs != {}
    share = policy.prefill_share(1024, 12, policy.solve_decay(1024, 12))
    assert share == pytest.approx(0.3, abs=ev.BUDGET_TOLERANCE)


def test_embedded_model_loads_offline_and_generates():
    from pyramid_core import load_model

    lm = load_model("embedded", device="cpu")
    ids = lm.tokenizer("It is a truth universally acknowledged", return_tensors="pt").input_ids
    tokens = [r.token_ids[0] for r in generate(lm, ids, max_new_tokens=5)]
    assert len(tokens) == 5
    assert lm.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    # PyramidInfer runs on it too, and keeps less than the full cache on a long prompt
    long = lm.tokenizer(" ".join(["the quick brown fox jumps over the lazy dog"] * 20), return_tensors="pt")
    records = list(generate(lm, long.input_ids, policy=PyramidPolicy(), max_new_tokens=2))
    assert ev.measured_kv_share(records[0]) < 1.0
