"""The quality measures on tiny, hand-checkable inputs; the embedded model loads offline and generates."""

import math

import pytest
import torch

from pyramid_core import eval_report
from pyramid_core import evaluate as ev
from pyramid_core.engine import generate
from pyramid_core.metrics import kv_share
from pyramid_core.policies import PyramidPolicy, StreamingPolicy
from pyramid_core.trace import StepRecord
from tests.tiny_models import tiny_model


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


def test_measured_share_of_streaming_is_its_budget():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (1, 100), generator=torch.Generator().manual_seed(2))
    records = list(generate(lm, ids, policy=StreamingPolicy(kv_budget=0.3), max_new_tokens=4))
    assert kv_share(records[0]) == pytest.approx(0.3)
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
    assert kv_share(records[0]) < 1.0


def _record(kv_bytes: int, step: int = 1) -> StepRecord:
    return StepRecord(step=step, phase="prefill" if step == 0 else "decode", token_ids=[5], finished=[False],
                      kept_tokens=[4],
                      kept_tokens_per_row=[[4]], kv_bytes=kv_bytes, peak_kv_bytes=kv_bytes, step_time_s=0.0,
                      seen_tokens=4)


def test_kv_bytes_summary_and_relative_of_hand_made_records():
    summary = ev.kv_bytes_summary([_record(100, step=0), _record(110), _record(130, step=2)])
    assert summary == {"prefill": 100, "decode_mean": 120, "final": 130}
    base = {"prefill": 400, "decode_mean": 200, "final": 260}
    assert ev.relative(summary, base) == pytest.approx({"prefill": 0.25, "decode_mean": 0.6, "final": 0.5})
    assert ev.kv_bytes_summary([_record(70, step=0)]) == {"prefill": 70, "decode_mean": 70, "final": 70}
    with pytest.raises(ValueError, match="empty"):
        ev.relative(summary, {**base, "final": 0})


def test_adapter_share_counts_distinct_groups():
    assert ev.adapter_share([[1, 0], [1, 1], [3, 0], [3, 0]], num_layers=12, kv_heads=2) == pytest.approx(3 / 24)
    with pytest.raises(ValueError, match="outside"):
        ev.adapter_share([[12, 0]], num_layers=12, kv_heads=2)


def test_recurformer_rows_build_valid_policies():
    from pyramid_core.policies.registry import make_policy

    from pyramid_core.resources import asset

    adapter = str(asset("recurformer-embedded-50"))
    rows = ev.recurformer_rows({"50%": adapter, "x": adapter}, twin_window=32, twin_sinks=2)
    assert [r["label"] for r in rows[:4]] == ["recurformer untrained 50%", "recurformer trained 50%",
                                             "recurformer window 2+32 50%", "pyramid+recurformer trained 50%"]
    assert len(rows) == 8 and rows[4]["tag"] == "x"
    policies = [make_policy(r["mode"], r["knobs"]) for r in rows[:4]]
    assert [p.variant for p in policies] == ["untrained", "trained", "window", "trained"]
    assert policies[2].twin_window == 32 and policies[2].twin_sinks == 2 and policies[0].adapter == adapter
    assert policies[3].name == "pyramid+recurformer"


def test_build_data_adds_short_probes_only_when_asked():
    ids = list(range(1000, 21000))
    data = ev.build_data(ids, 0, samples=2, probes=3, context_tokens=400, continuation_tokens=8,
                         new_tokens=4, short_filler=50)
    assert len(data.short_probes) == len(data.short_controls) == 3
    probe = data.short_probes[0]
    assert len(probe.ids) == 1 + 256 + 32 + 50 + 8 and len(data.probes[0].ids) == 400
    # the cue repeats the span's first tokens 50 filler tokens after it, and the control hides the span
    assert probe.ids[-8:] == probe.ids[probe.span_start:probe.span_start + 8]
    assert probe.target == probe.ids[probe.span_start + 8:probe.span_start + 32]
    assert probe.ids[-8:] != data.probes[0].ids[-8:]  # other text than the long probes
    assert not set(probe.target) & set(data.short_controls[0].ids)
    assert ev.build_data(ids, 0, 2, 3, 400, 8, 4).short_probes == []


def _scored(ppl, acc, agree, kv=0.5):
    nll = math.log(ppl)
    return {"ppl": ppl, "ppl_ratio": ppl / 20.0, "short_probe": {"accuracy": acc, "exact_copy_8": 0.0},
            "probe": {"accuracy": 0.3}, "agreement": {"equal": agree}, "kv_bytes_ratio": {"decode_mean": kv},
            "nll_per_window": [nll - 0.5, nll, nll + 0.5]}


def test_named_summary_says_which_mode_wins():
    """Trained beats untrained on all three measures but loses to the window twin on perplexity."""
    points = [{**_scored(80.0, 0.2, 0.1), "tag": "50%", "mode": "recurformer", "variant": "untrained"},
              {**_scored(25.0, 0.5, 0.6), "tag": "50%", "mode": "recurformer", "variant": "trained"},
              {**_scored(22.0, 0.4, 0.7), "tag": "50%", "mode": "recurformer", "variant": "window"}]
    points[1]["nll_per_window"] = [math.log(30.0), math.log(10.0), math.log(40.0)]  # below the twin's in window 2
    base = {**_scored(20.0, 0.60, 1.0), "control": {"accuracy": 0.30}, "short_control": {"accuracy": 0.40}}
    settings = {"filler": 700, "short_filler": 100, "copy_k": 8}
    text = eval_report.named_summary({"baseline": base, "points": points, "settings": settings})
    assert "does not copy from 700 tokens back" in text and "short probe measures retrieval" in text
    assert f"per window {20 * math.exp(-0.5):.1f} to {20 * math.exp(0.5):.1f}" in text
    assert "beats its untrained initialisation on 3 of 3 measures" in text
    assert "wins on 1 of 3 (short probe) and has the lower NLL in 1 of 3 windows" in text
    assert "training-free twin is better (22.00 against 25.00)" in text
    assert ev.copies(base, "short_probe", "short_control") and not ev.copies(base)
