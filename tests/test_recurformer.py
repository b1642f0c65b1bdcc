"""RecurFormer: recency scores, the group rule, the GroupRNN scans, attention transfer and adapters.

The scans are pinned by comparison (STYLE rule 9): the chunked scan and the one-step decode against the
naive step loop, outputs, final states and gradients, on awkward lengths around the chunk size.
"""

import json

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from pyramid_core.layers import project_qkv
from pyramid_core.recurformer import Adapter, GroupRNN, apply_adapter, load_adapter, save_adapter
from pyramid_core.recurformer.adapter import rnn_config
from pyramid_core.recurformer.convert import convert
from pyramid_core.recurformer.recency import choose_groups, group_scores, recency_scores, window_masses
from pyramid_core.metrics import state_nbytes
from pyramid_core.recurformer.rnn import _fla_available, scan, scan_chunked, scan_naive, scan_step
from pyramid_core.trace import RecencyReport
from tests.tiny_models import save_tiny_checkpoint, tiny_model

CHUNK = 64
TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=1e-4, rtol=1e-4)}


@pytest.fixture(autouse=True)
def autograd_on():
    """A half-consumed engine.generate leaves its inference_mode on for the whole thread (the `with`
    sits inside a generator); tests run earlier in the session can do that. Start every test clean."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def assert_close(name, ref, out, dtype):
    """Compare with the fixed tolerance of dtype; the failure names max abs and relative RMS errors."""
    err = (out.double() - ref.double())
    rel = err.pow(2).mean().sqrt() / ref.double().pow(2).mean().sqrt().clamp(min=1e-30)
    assert torch.allclose(out.double(), ref.double(), **TOL[dtype]), \
        f"{name}: max abs err {err.abs().max():.3g}, rel rms err {rel:.3g}"


def scan_inputs(B, H, T, D, dtype, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=gen, dtype=dtype) for _ in range(3))
    log_a = -torch.rand(B, H, T, generator=gen, dtype=dtype) * 2   # decays from 1 down to e^-2
    state = torch.randn(B, H, D, D, generator=gen, dtype=dtype)
    tensors = (q, k, v, log_a, state)
    return [t.requires_grad_(requires_grad) for t in tensors]


# ----------------------------------------------------------------------------- recency

def test_window_masses_on_a_hand_made_attention_matrix():
    # one head, two queries at positions 4 and 5 over keys 0..5; window 1 = the query and 1 key before
    probs = torch.tensor([[[[0.1, 0.2, 0.0, 0.3, 0.4, 0.0],
                            [0.05, 0.05, 0.1, 0.2, 0.25, 0.35]]]])
    k_pos = torch.arange(6)[None]
    recent, sink = window_masses(probs, torch.tensor([[4, 5]]), k_pos, window=1, sink_len=2)
    torch.testing.assert_close(recent, torch.tensor([[[0.3 + 0.4, 0.25 + 0.35]]]))
    torch.testing.assert_close(sink, torch.tensor([[[0.1 + 0.2, 0.05 + 0.05]]]))
    # an empty slot (position -1) counts for neither
    k_pos[0, 0] = -1
    _, sink = window_masses(probs, torch.tensor([[4, 5]]), k_pos, window=1, sink_len=2)
    torch.testing.assert_close(sink, torch.tensor([[[0.2, 0.05]]]))


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_recency_scores_equal_brute_force_from_hf_eager_attention(family):
    lm = tiny_model(family)
    ids = torch.randint(3, 97, (2, 50), generator=torch.Generator().manual_seed(3))
    window, sinks = 5, 3
    report = recency_scores(lm, ids, window=window, sink_len=sinks)
    lm.model.set_attn_implementation("eager")
    with torch.no_grad():
        attn = torch.stack(lm.model(ids, output_attentions=True).attentions)  # [L, B, H, T, T]
    i = torch.arange(50)
    voters = i >= window + sinks
    recent_mask = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - window)
    recent = (attn * recent_mask).sum(-1)[..., voters].mean((1, 3))   # [L, H]
    sink = attn[..., :sinks].sum(-1)[..., voters].mean((1, 3))
    torch.testing.assert_close(torch.tensor(report.scores, dtype=torch.float64), recent.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(report.sink_mass, dtype=torch.float64), sink.double(), atol=1e-5, rtol=1e-5)
    assert report.heads_per_group == 2


def test_recency_needs_text_longer_than_sink_plus_window():
    with pytest.raises(ValueError, match="at least"):
        recency_scores(tiny_model("llama"), torch.arange(3, 20)[None], window=16, sink_len=4)


def hand_report():
    # 2 layers x 4 heads, 2 heads per group; sink masses 0.1 except one head
    return RecencyReport(window=8, sink_len=4, heads_per_group=2,
                         scores=[[0.9, 0.2, 0.7, 0.6], [0.5, 0.5, 0.85, 0.8]],
                         sink_mass=[[0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.0]])


def test_group_score_is_the_min_over_its_heads():
    report = hand_report()
    expected = [[0.3, 0.7], [0.6, 0.8]]  # min(0.9+0.1, 0.2+0.1) = 0.3 ... min(0.95, 0.8)
    torch.testing.assert_close(torch.tensor(group_scores(report)), torch.tensor(expected))
    torch.testing.assert_close(torch.tensor(group_scores(report, include_sink=False)),
                               torch.tensor([[0.2, 0.6], [0.5, 0.8]]))


def test_choose_groups_takes_the_top_fraction_and_breaks_ties_by_position():
    report = hand_report()
    assert choose_groups(report, fraction=0.5) == [[0, 1], [1, 1]]
    assert choose_groups(report, fraction=0.75) == [[0, 1], [1, 0], [1, 1]]
    assert choose_groups(report, fraction=0.0) == []
    tied = RecencyReport(window=8, sink_len=4, heads_per_group=1, scores=[[0.5, 0.5], [0.5, 0.9]],
                         sink_mass=[[0.0, 0.0], [0.0, 0.0]])
    assert choose_groups(tied, fraction=0.5) == [[0, 0], [1, 1]]
    assert choose_groups(report, groups=[[1, 0], [0, 1], [1, 0]]) == [[0, 1], [1, 0]]
    for bad in (dict(fraction=1.5), dict(groups=[[2, 0]]), dict(), dict(fraction=0.5, groups=[[0, 0]])):
        with pytest.raises(ValueError):
            choose_groups(report, **bad)


# ----------------------------------------------------------------------------- scans

@pytest.mark.parametrize("T", [1, 63, 64, 130], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_chunked_scan_and_steps_equal_the_naive_loop(T, dtype):
    q, k, v, log_a, state = scan_inputs(2, 3, T, 8, dtype)
    ref_o, ref_s = scan_naive(q, k, v, log_a, state)
    out_o, out_s = scan_chunked(q, k, v, log_a, state, CHUNK)
    assert_close("chunked output", ref_o, out_o, dtype)
    assert_close("chunked state", ref_s, out_s, dtype)
    s, outs = state, []
    for t in range(T):
        o, s = scan_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], log_a[:, :, t:t + 1], s)
        outs.append(o)
    assert_close("step output", ref_o, torch.cat(outs, dim=2), dtype)
    assert_close("step state", ref_s, s, dtype)


@pytest.mark.parametrize("T", [63, 130], ids=lambda t: f"T{t}")
def test_chunked_scan_gradients_equal_the_naive_loop(T):
    inputs = scan_inputs(1, 2, T, 6, torch.float64, seed=1, requires_grad=True)
    weight = torch.randn(1, 2, T, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = []
    for run_scan in (scan_naive, lambda *a: scan_chunked(*a, chunk=CHUNK)):
        o, s = run_scan(*inputs)
        grads.append(torch.autograd.grad((o * weight).sum() + s.sin().sum(), inputs))
    for name, ref, out in zip(("q", "k", "v", "log_a", "state"), *grads):
        assert_close(f"grad {name}", ref, out, torch.float64)


def test_very_strong_decay_stays_finite():
    """Cumulative log decays of -1e4 inside a chunk must not overflow (exponents are kept <= 0)."""
    q, k, v, _, _ = scan_inputs(1, 1, 100, 4, torch.float32)
    log_a = torch.full((1, 1, 100), -200.0)
    o, s = scan_chunked(q, k, v, log_a, None, CHUNK)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    assert_close("strong decay", scan_naive(q, k, v, log_a)[0], o, torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fla scan needs a CUDA GPU (run on the GPU machine)")
@pytest.mark.parametrize("T", [63, 130, 1000], ids=lambda t: f"T{t}")
def test_gpu_scan_equals_the_naive_loop(T):
    """On CUDA, scan() without gradients is fla's Triton kernel when fla is installed (TF32 inside the
    kernel: 1.5e-3 relative RMS error measured on an H200, so the bound is 5e-3); with gradients it is
    the PyTorch twin (fla's backward is refused on Hopper with Triton < 3.7.1). Both against the float64
    reference loop."""
    if not _fla_available():
        pytest.skip("flash-linear-attention (fla-core) is not installed: scan() uses the PyTorch twin")
    inputs = scan_inputs(2, 3, T, 64, torch.float64, seed=3)
    ref_o, ref_s = scan_naive(*inputs)
    with torch.no_grad():
        o, s = scan(*[x.float().cuda() for x in inputs])
    for name, ref, out in (("output", ref_o, o), ("state", ref_s, s)):
        rel = (out.double().cpu() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()
        assert rel < 5e-3, f"{name}: rel rms err {rel:.3g}"
    gpu = [x.float().cuda().requires_grad_() for x in inputs]
    o, s = scan(*gpu)
    grads = torch.autograd.grad(o.sum() + s.sum(), gpu)
    cpu = [x.clone().requires_grad_() for x in inputs]
    ref_o, ref_s = scan_naive(*cpu)
    ref_grads = torch.autograd.grad(ref_o.sum() + ref_s.sum(), cpu)
    for name, ref, out in zip(("q", "k", "v", "log_a", "state"), ref_grads, grads):
        rel = (out.double().cpu() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()
        assert rel < 5e-3, f"grad {name}: rel rms err {rel:.3g}"


def group_rnn(family, group=1, dtype=torch.float64, taps=1):
    lm = tiny_model(family)
    base = lm.model.model
    rnn = GroupRNN.from_attention(base.layers[1].self_attn, base.rotary_emb, group, rnn_config(lm, taps=taps))
    with torch.no_grad():  # a data-dependent decay, a skip term and taps, so every path is exercised
        rnn.decay.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
        rnn.skip.fill_(0.5)
        if rnn.taps is not None:
            rnn.taps.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return lm, rnn.to(dtype)


@pytest.mark.parametrize("family, taps", [("llama", 1), ("qwen2", 1), ("qwen3", 1), ("llama", 4), ("qwen2", 3)])
def test_group_rnn_forward_step_and_naive_agree(family, taps):
    _, rnn = group_rnn(family, taps=taps)
    x = torch.randn(2, 130, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    pos = torch.arange(130).repeat(2, 1) + torch.tensor([[0], [7]])
    ref, ref_state = rnn.naive_scan(x, pos)
    out, state = rnn(x, pos)
    assert_close("forward", ref, out, torch.float64)
    assert_close("forward state", ref_state, state, torch.float64)
    # prefill 100 tokens, then decode the rest one at a time
    out, state = rnn(x[:, :100], pos[:, :100])
    steps = [out]
    for t in range(100, 130):
        y, state = rnn.step(x[:, t:t + 1], pos[:, t:t + 1], state)
        steps.append(y)
    assert_close("prefill + steps", ref, torch.cat(steps, dim=1), torch.float64)
    assert_close("prefill + steps state", ref_state, state, torch.float64)
    D = rnn.cfg.head_dim
    assert out.shape == (2, 100, 2 * D) and state.shape == (2, 2, D + taps - 1, D)
    assert state_nbytes(state) == state.numel() * 8


def test_taps_read_the_previous_values():
    """With taps, y gains taps[j] * v_{t-j} for j = 1 .. taps - 1, exactly (the state keeps those values)."""
    _, plain = group_rnn("llama")
    _, tapped = group_rnn("llama", taps=4)
    x = torch.randn(1, 12, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    pos = torch.arange(12)[None]
    base, _ = plain(x, pos)
    out, state = tapped(x, pos)
    _, _, v, _ = tapped.project(x, pos)
    G, D = tapped.cfg.heads, tapped.cfg.head_dim
    expected = base.view(1, 12, G, D).clone()
    for t in range(12):
        for j in range(1, 4):
            if t - j >= 0:
                expected[0, t] += tapped.taps[:, j - 1] * v[0, :, t - j]
    assert_close("tapped output", expected.view(1, 12, G * D), out, torch.float64)
    assert_close("kept values", v[:, :, -3:], state[:, :, D:], torch.float64)


def test_with_taps_starts_as_the_same_rnn():
    _, rnn = group_rnn("qwen2")
    wider = rnn.with_taps(4)
    x = torch.randn(2, 30, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    pos = torch.arange(30).repeat(2, 1)
    (y, state), (y4, state4) = rnn(x, pos), wider(x, pos)
    assert_close("same output", y, y4, torch.float64)
    assert_close("same recurrent state", state, state4[:, :, :rnn.cfg.head_dim], torch.float64)
    assert wider.cfg.taps == 4 and rnn.cfg.taps == 1 and wider.taps.abs().sum() == 0


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_group_rnn_copies_the_groups_queries_and_keys(family):
    """q and k of GroupRNN(group 1) are the attention's heads 2-3 and KV head 1 after norms and RoPE."""
    lm, rnn = group_rnn(family, group=1, dtype=torch.float32)
    attn, D = lm.model.model.layers[1].self_attn, rnn.cfg.head_dim
    x = torch.randn(1, 20, 64, generator=torch.Generator().manual_seed(5))
    pos = torch.arange(20)[None]
    with torch.no_grad():
        q, k, _ = project_qkv(attn, x, D)
        cos, sin = lm.model.model.rotary_emb(x, pos)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        mq, mk, mv, _ = rnn.project(x, pos)
    torch.testing.assert_close(mq / rnn.cfg.scale, q[:, 2:4])
    torch.testing.assert_close(mk[:, :1], k[:, 1:2])
    torch.testing.assert_close(mv[:, 0], attn.v_proj(x).view(1, 20, 2, D)[:, :, 1])


@pytest.mark.parametrize("taps", [1, 4])
def test_left_pads_do_not_change_the_state(taps):
    _, rnn = group_rnn("qwen2", taps=taps)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 70, 64, dtype=torch.float64, generator=gen)
    alone, alone_state = rnn(x, torch.arange(70)[None])
    garbage = torch.randn(1, 9, 64, dtype=torch.float64, generator=gen) * 10
    padded_x = torch.cat([garbage, x], dim=1)
    padded_pos = torch.cat([torch.full((1, 9), -1), torch.arange(70)[None]], dim=1)
    for run in (rnn, rnn.naive_scan):
        out, state = run(padded_x, padded_pos)
        assert_close("padded output", alone, out[:, 9:], torch.float64)
        assert_close("padded state", alone_state, state, torch.float64)
    _, state = rnn.step(garbage[:, :1], torch.tensor([[-1]]), alone_state)
    assert_close("padded step state", alone_state, state, torch.float64)


# ----------------------------------------------------------------------------- convert and adapters

def test_attention_transfer_lowers_the_loss():
    lm = tiny_model("qwen3")
    ids = torch.randint(3, 97, (2, 96), generator=torch.Generator().manual_seed(7))
    adapter = convert(lm, [[1, 0], [2, 1]], ids, steps=60, lr=1e-2, progress=False)
    for name, s in adapter.stats["groups"].items():
        assert s["final_loss"] < 0.7 * s["initial_loss"], f"group {name}: {s}"
    assert adapter.groups == [[1, 0], [2, 1]]


@pytest.fixture(scope="module")
def small_adapter():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (1, 40), generator=torch.Generator().manual_seed(8))
    return convert(lm, [[3, 1], [0, 0]], ids, steps=2, progress=False)


def test_adapter_round_trips_and_attaches(tmp_path, small_adapter):
    save_adapter(small_adapter, tmp_path)
    loaded = load_adapter(tmp_path)
    assert loaded.groups == [[0, 0], [3, 1]] and loaded.config == small_adapter.config
    assert loaded.stats == small_adapter.stats and loaded.base_model == "tiny-llama"
    assert loaded.state_dict.keys() == small_adapter.state_dict.keys()
    for key, tensor in small_adapter.state_dict.items():
        assert torch.equal(loaded.state_dict[key], tensor), key

    lm = tiny_model("llama")
    modules = apply_adapter(lm, tmp_path)
    assert lm.recurrent is modules and sorted(modules) == [0, 3] and list(modules[3]) == [1]
    rnn = modules[3][1]
    assert isinstance(rnn, GroupRNN) and not rnn.training
    assert all(not p.requires_grad and p.dtype == lm.dtype for p in rnn.parameters())
    prefix = "3.1."
    for key, tensor in rnn.state_dict().items():
        assert torch.equal(tensor, small_adapter.state_dict[prefix + key]), key


def test_load_model_applies_an_adapter(tmp_path, small_adapter):
    from pyramid_core.models import load_model

    save_tiny_checkpoint(tmp_path / "model", "llama")
    save_adapter(small_adapter, tmp_path / "adapter")
    lm = load_model(str(tmp_path / "model"), device="cpu", adapter=str(tmp_path / "adapter"))
    assert sorted(lm.recurrent) == [0, 3]


def test_mismatched_adapter_raises(tmp_path, small_adapter):
    with pytest.raises(ValueError, match="head_dim"):
        apply_adapter(tiny_model("qwen3"), small_adapter)  # head_dim 32, not 16
    with pytest.raises(ValueError, match="outside"):
        apply_adapter(tiny_model("llama", layers=2), small_adapter)  # layer 3 does not exist
    stray = Adapter(**{**small_adapter.__dict__, "groups": [[0, 0]]})
    with pytest.raises(ValueError, match="belong to no listed group"):
        apply_adapter(tiny_model("llama"), stray)
    with pytest.raises(ValueError, match="not an adapter"):
        load_adapter(tmp_path)


def test_cli_convert_then_recency(tmp_path, capsys):
    from pyramid_core.cli import main

    save_tiny_checkpoint(tmp_path / "model", "llama")
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat and a dog ran far away. " * 30)
    common = ["--model", str(tmp_path / "model"), "--window", "4", "--max-tokens", "64", "--samples", "2"]
    assert main(["recency", *common, "--text-file", str(text), "--out", str(tmp_path / "r.json")]) == 0
    assert len(RecencyReport(**json.loads((tmp_path / "r.json").read_text())).scores) == 4
    assert main(["convert", *common, "--calibration-file", str(text), "--replace", "0.25", "--steps", "2",
                 "--out", str(tmp_path / "ad"), "--json"]) == 0
    assert len(load_adapter(tmp_path / "ad").groups) == 2
    assert main(["convert", *common, "--calibration-file", str(text), "--groups", "1-0",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "layer:kv_group" in capsys.readouterr().err
