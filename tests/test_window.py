"""GroupWindow, the sink + sliding-window twin of a GroupRNN, pinned by comparison (STYLE rule 9).

References computed here: the layer's real attention (HF projections, HF RoPE, SDPA causal) for the
no-eviction case, and a per-query loop over the visible key set for the windowed case.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from pyramid_core.recurformer.adapter import rnn_config
from pyramid_core.metrics import state_nbytes
from pyramid_core.recurformer.window import GroupWindow, WindowState, window_modules
from tests.tiny_models import tiny_model

TOL = dict(atol=1e-5, rtol=1e-4)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.inference_mode(False), torch.no_grad():
        yield


def assert_close(name, ref, out):
    err = out.double() - ref.double()
    rel = err.pow(2).mean().sqrt() / ref.double().pow(2).mean().sqrt().clamp(min=1e-30)
    assert torch.allclose(out.double(), ref.double(), **TOL), \
        f"{name}: max abs err {err.abs().max():.3g}, rel rms err {rel:.3g}"


def layer0(family="llama"):
    lm = tiny_model(family)
    return lm, lm.model.model.layers[0].self_attn, lm.model.model.rotary_emb


def hidden(B, T, C, seed=0):
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed))


def hf_qkv(lm, attn, rotary, x, positions):
    """The layer's q [B, H, T, D], k and v [B, H_kv, T, D] with HF's RoPE at `positions` [B, T]."""
    B, T, _ = x.shape
    D = rnn_config(lm).head_dim
    q, k, v = (proj(x).view(B, T, -1, D) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = rotary(x, positions)
    q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    return q, k, v.transpose(1, 2)


def group_slice(o, group, G):
    """o [B, H, T, D] -> the group's heads as o_proj input slots [B, T, G*D]."""
    B, _, T, D = o.shape
    return o[:, group * G:(group + 1) * G].transpose(1, 2).reshape(B, T, G * D)


def brute_force(q, k, v, positions, sink_len, window, scale):
    """One query at a time over its visible key set: q [B, G, T, D], k and v [B, T, D] -> [B, G, T, D]."""
    B, G, T, D = q.shape
    out = torch.zeros(B, G, T, D, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            qp = int(positions[b, t])
            if qp < 0:
                continue
            seen = [s for s in range(T) if 0 <= (p := int(positions[b, s])) <= qp
                    and (p < sink_len or p > qp - window)]
            logits = (q[b, :, t].double() @ k[b, seen].double().T) * scale
            out[b, :, t] = logits.softmax(-1) @ v[b, seen].double()
    return out


def run_split(module, x, positions, prefill):
    """forward over the first `prefill` tokens, then one step per token; returns y and each step's state."""
    y, state = module(x[:, :prefill], positions[:, :prefill])
    ys, states = [y], [state]
    for t in range(prefill, x.shape[1]):
        y, state = module.step(x[:, t:t + 1], positions[:, t:t + 1], state)
        ys.append(y)
        states.append(state)
    return torch.cat(ys, dim=1), states


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_no_eviction_equals_the_layers_real_attention(family):
    lm, attn, rotary = layer0(family)
    cfg = rnn_config(lm)
    B, T = 2, 23
    x, positions = hidden(B, T, cfg.hidden_size), torch.arange(T).expand(B, T)
    q, k, v = hf_qkv(lm, attn, rotary, x, positions)
    H_kv = k.shape[1]
    o = F.scaled_dot_product_attention(q, k.repeat_interleave(cfg.heads, 1), v.repeat_interleave(cfg.heads, 1),
                                       is_causal=True, scale=cfg.scale)
    modules = window_modules(lm, [(0, g) for g in range(H_kv)], sink_len=0, window=T)
    for group, module in modules[0].items():
        y, _ = module(x, positions)
        assert y.shape == (B, T, cfg.heads * cfg.head_dim) and y.dtype == x.dtype
        assert_close(f"group {group}", group_slice(o, group, cfg.heads), y)


@pytest.mark.parametrize("sink_len,window", [(0, 4), (3, 8), (4, 64)], ids=["s0-w4", "s3-w8", "s4-w64"])
def test_prefill_then_steps_equals_one_forward(sink_len, window):
    lm, attn, rotary = layer0()
    cfg = rnn_config(lm)
    module = GroupWindow.from_attention(attn, rotary, 1, cfg, sink_len=sink_len, window=window)
    B, T = 2, 30
    x, positions = hidden(B, T, cfg.hidden_size, seed=1), torch.arange(T).expand(B, T)
    y_full, state_full = module(x, positions)
    y_split, states = run_split(module, x, positions, T - 5)
    assert_close("output", y_full, y_split)
    for state in states:
        assert state.positions.shape[1] <= sink_len + window
        assert state.keys.shape[:2] == state.values.shape[:2] == state.positions.shape
    assert torch.equal(state_full.positions.sort(-1).values, states[-1].positions.sort(-1).values)


@pytest.mark.parametrize("sink_len,window", [(0, 1), (4, 6), (2, 11)], ids=["s0-w1", "s4-w6", "s2-w11"])
def test_small_window_equals_brute_force_masked_attention(sink_len, window):
    lm, attn, rotary = layer0("qwen2")
    cfg = rnn_config(lm)
    B, T, group = 2, 40, 0
    x, positions = hidden(B, T, cfg.hidden_size, seed=2), torch.arange(T).expand(B, T)
    q, k, v = hf_qkv(lm, attn, rotary, x, positions)
    q = q[:, group * cfg.heads:(group + 1) * cfg.heads]
    ref = brute_force(q, k[:, group], v[:, group], positions, sink_len, window, cfg.scale)
    module = GroupWindow.from_attention(attn, rotary, group, cfg, sink_len=sink_len, window=window)
    y, _ = module(x, positions)
    assert_close("forward", group_slice(ref, 0, cfg.heads), y)
    y_split, _ = run_split(module, x, positions, 9)
    assert_close("prefill + steps", group_slice(ref, 0, cfg.heads), y_split)


def test_left_padded_row_equals_its_single_run():
    lm, attn, rotary = layer0()
    cfg = rnn_config(lm)
    sink_len, window, pads, T = 3, 5, 7, 20
    module = GroupWindow.from_attention(attn, rotary, 0, cfg, sink_len=sink_len, window=window)
    x = hidden(2, T, cfg.hidden_size, seed=3)
    positions = torch.stack((torch.arange(T), torch.arange(T) - pads)).clamp(min=-1)   # row 1: 7 pads
    y_batch, states = run_split(module, x, positions, 12)
    y_alone, alone = run_split(module, x[1:, pads:], positions[1:, pads:], 12 - pads)
    assert_close("padded row", y_alone[0], y_batch[1, pads:])
    assert_close("other row", module(x[:1], positions[:1])[0][0], y_batch[0])
    assert torch.equal(y_batch[1, :pads], torch.zeros_like(y_batch[1, :pads]))
    # the padded row's state holds exactly its sinks and its last `window` tokens, no pad
    for state, last in ((states[0], 12 - pads - 1), (states[-1], T - pads - 1)):
        kept = set(state.positions[1].tolist()) - {-1}
        assert kept == set(range(sink_len)) | set(range(last - window + 1, last + 1))
    assert_close("state keys", alone[-1].keys[0, alone[-1].positions[0].argsort()],
                 states[-1].keys[1, states[-1].positions[1].argsort()])


def test_state_bytes_are_bounded():
    lm, attn, rotary = layer0()
    cfg = rnn_config(lm)
    module = GroupWindow.from_attention(attn, rotary, 1, cfg, sink_len=4, window=16)
    x = hidden(2, 200, cfg.hidden_size, seed=4)
    positions = torch.arange(200).expand(2, 200)
    _, after_40 = module(x[:, :40], positions[:, :40])
    _, states = run_split(module, x, positions, 40)
    _, after_200 = module(x, positions)
    slots = 4 + 16
    expected = 2 * slots * (2 * cfg.head_dim * 4 + 8)   # B rows x slots x (k, v in float32 + int64 position)
    assert state_nbytes(after_40) == state_nbytes(after_200) == state_nbytes(states[-1]) == expected
    assert isinstance(after_200, WindowState)
    assert state_nbytes(torch.zeros(2, 3, 4)) == 2 * 3 * 4 * 4 and state_nbytes(None) == 0


def test_bad_knobs_raise():
    cfg = rnn_config(tiny_model())
    with pytest.raises(ValueError, match="window"):
        GroupWindow(cfg, sink_len=4, window=0)
    with pytest.raises(ValueError, match="sink_len"):
        GroupWindow(cfg, sink_len=-1, window=8)
