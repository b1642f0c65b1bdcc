"""GroupRNN: a scalar-decay linear RNN that stands in for one KV group of one attention layer.

RecurFormer (Yan et al. 2024, arXiv 2410.12850) replaces recency heads with "the Mamba architecture";
its method section could not be read (docs/recurformer.md), so this is the plan written there: a Mamba-2 / SSD-style head with the Mamba-in-the-Llama mapping q -> C, k -> B, v -> x,
applied to one KV group instead of a whole layer, keeping RoPE on q and k (option B: (R_t q).(R_s k)
is q.R_{s-t} k, so the recurrence is exact and the initial kernel equals the pretrained logits).

For each of the group's G query heads h, at token t (x_t is the layer's input_layernorm output):

    a_t = exp(-softplus(w_a[h] . x_t + b_a[h]))           data-dependent decay in (0, 1)
    S_t = a_t S_{t-1} + k_t v_t^T                           state [D_k, D_v], k and v shared by the group
    o_t = (scale q_t)^T S_t                                 [D]
    y_t = rmsnorm(o_t) * out_weight[h] + skip[h] * v_t      [D], into head h's o_proj slot

Why the output norm: linear attention has no softmax denominator, so |o_t| grows with the effective
window 1/(1-a) and with |q.k|, while an attention output is a convex combination of values. An RMS
norm over the head dim removes that scale (Mamba-2 normalises its output the same way, with a gate),
and `out_weight` restores a per-channel scale that convert() first fits by least squares. `skip` is
Mamba's D term (a direct path from the token's own value), starting at 0.

Departures from Mamba-2: no causal conv on q and k (RoPE gives position), no z gate, and one decay per
query head rather than per group, so the G heads keep G states; k and v are computed once per group.
Optionally (`taps`), y also reads the last few values directly, a short causal convolution over v.

RNNHeads holds what any set of such heads shares (RoPE, masking, scans, read-out, state layout);
GroupRNN is one group's, with the parameters an adapter saves; stacked.py runs a layer's groups as one.

Scans (all take q, k, v [B, H, T, D], log_a [B, H, T], state [B, H, D, D] and return (o, state)):
`scan_chunked` (prefill and training), `scan_step` (decode, T = 1) and `scan_naive` (the reference
step loop the tests compare both against). They compute in float32 (float64 if given float64) and
keep the state in that precision whatever the model dtype. `scan` is what forward() calls: on a GPU
with flash-linear-attention installed, its Triton `chunk_simple_gla` (the same recurrence: a scalar
log-decay per head and token); elsewhere `scan_chunked`, its PyTorch twin.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..optional import importable


@dataclass
class RNNConfig:
    """Shape and init of a GroupRNN; saved in adapter.json.

    hidden_size:   the model's hidden size C (input width).
    head_dim:      D, the attention head dim (state is D x D per head).
    heads:         G, query heads per KV group.
    qkv_bias:      whether q/k/v projections have biases (Qwen2).
    qk_norm:       whether q and k get an RMS norm over the head dim before RoPE (Qwen3).
    norm_eps:      eps of that q/k norm (the model's rms_norm_eps).
    scale:         query scale, the attention's `scaling` (D ** -0.5).
    rope_scaling:  the rotary embedding's attention_scaling (1.0 for plain RoPE).
    init_decay:    decay a at initialisation (w_a = 0); 0.95 is an effective window of about 20 tokens.
    chunk:         chunk length of the chunked scan.
    out_eps:       eps of the output RMS norm.
    taps:          values the output reads directly: the token's own (the skip term) and, for taps > 1,
                   the taps - 1 before it through learned per-channel weights (a short causal
                   convolution over v, Mamba's conv idea); the state then keeps those values.
    """

    hidden_size: int
    head_dim: int
    heads: int
    qkv_bias: bool = False
    qk_norm: bool = False
    norm_eps: float = 1e-6
    scale: float | None = None
    rope_scaling: float = 1.0
    init_decay: float = 0.95
    chunk: int = 64
    out_eps: float = 1e-6
    taps: int = 1

    def __post_init__(self):
        for name in ("hidden_size", "head_dim", "heads", "chunk", "taps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if not 0.0 < self.init_decay < 1.0:
            raise ValueError(f"init_decay must be in (0, 1), got {self.init_decay}")
        if self.scale is None:
            self.scale = self.head_dim ** -0.5

    def to_dict(self) -> dict:
        return asdict(self)


class HeadRMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32 (what Qwen3's q_norm/k_norm compute)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_rms_norm(x, self.weight, self.eps)


def head_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HeadRMSNorm's maths with a given weight (a layer's stacked groups pass one per group)."""
    x32 = x.float() if x.dtype != torch.float64 else x
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE (the rotate-half form all four families use). x [B, H, T, D]; cos, sin [B, T, D]."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class RNNHeads(nn.Module):
    """What every run of the recurrence shares, for H query heads: RoPE, pad masking, the scans, the
    read-out, taps and the state layout. GroupRNN (H = G, one group) and a layer's stacked groups
    (stacked.py, H = n * G) differ only in how `project` computes q, k, v and the decay gate.

    Call with the layer's input_layernorm output x [B, T, C] and original positions [B, T]
    (-1 marks a left pad, which leaves the state unchanged). Returns (y [B, T, H * D] in x's dtype,
    state [B, H, D + taps - 1, D] float32).
    """

    def __init__(self, cfg: RNNConfig, heads: int):
        super().__init__()
        self.cfg = cfg
        D = cfg.head_dim
        self.out_weight = nn.Parameter(torch.ones(heads, D))
        self.skip = nn.Parameter(torch.zeros(heads, 1))
        # weights of the values 1 .. taps - 1 tokens back, per head and channel; 0 at first (no change)
        self.taps = nn.Parameter(torch.zeros(heads, cfg.taps - 1, D)) if cfg.taps > 1 else None
        # RoPE frequencies, saved with the adapter so a GroupRNN needs nothing from the model to run
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, D, 2).float() / D))

    def project(self, x: torch.Tensor, positions: torch.Tensor):
        """q [B, H, T, D] (scaled), k and v [B, H, T, D], log_a [B, H, T]; pads zeroed."""
        raise NotImplementedError

    def heads_of(self, q, k, v, gate, positions: torch.Tensor):
        """project's common tail. q [B, T, H, D] and k, v [B, T, n, D] (one k and v per group of H / n
        heads, q/k norms applied), gate [B, T, H] -> project's outputs: RoPE on q and k, the decay,
        pads masked, k and v repeated over their group's heads."""
        B, T, H, D = q.shape
        n = k.shape[2]
        cos, sin = self.rope(positions, q.dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        log_a = -F.softplus(gate.to(_compute_dtype(gate))).transpose(1, 2)  # [B, H, T], fp32 or fp64
        real = (positions >= 0)
        k = k * real[:, None, :, None].to(k.dtype)  # a pad adds nothing to the state...
        log_a = log_a * real[:, None, :]              # ...and does not decay it

        def repeat(t):  # [B, n, T, D] -> [B, H, T, D]; a view when n = 1
            return t[:, :, None].expand(B, n, H // n, T, D).reshape(B, H, T, D)
        return q * self.cfg.scale, repeat(k), repeat(v), log_a

    # ------------------------------------------------------------------------- pieces

    def rope(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos, sin [B, T, D] at the original positions (pads use position 0; their k is zeroed)."""
        freqs = positions.clamp(min=0)[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        s = self.cfg.rope_scaling
        return (emb.cos() * s).to(dtype), (emb.sin() * s).to(dtype)

    def readout(self, o: torch.Tensor, v: torch.Tensor, dtype: torch.dtype, tapped=None) -> torch.Tensor:
        """o, v [B, H, T, D] -> y [B, T, H * D]: output RMS norm, per-channel scale, skip term, and the
        previous values' term when the RNN has taps."""
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.cfg.out_eps)
        y = o * self.out_weight[:, None] + self.skip[:, None] * v.to(o.dtype)
        if tapped is not None:
            y = y + tapped.to(y.dtype)
        B, G, T, D = y.shape
        return y.transpose(1, 2).reshape(B, T, G * D).to(dtype)

    def tap_values(self, v: torch.Tensor, positions: torch.Tensor, past: torch.Tensor | None):
        """The previous values' term [B, H, T, D] and the last taps - 1 values [B, H, taps - 1, D] that the
        next call needs (pads count as zero values). (None, None) without taps."""
        if self.taps is None:
            return None, None
        n = self.cfg.taps - 1
        real = positions >= 0
        v = v * real[:, None, :, None].to(v.dtype)
        B, G, T, D = v.shape
        if past is None:
            past = v.new_zeros(B, G, n, D)
        seen = torch.cat((past.to(v.dtype), v), dim=2)  # [B, G, n + T, D]: oldest first
        tapped = sum(self.taps[:, j - 1, None] * seen[:, :, n - j:n - j + T] for j in range(1, n + 1))
        # the next call's past: the last n values that are not pads (pads sit in front of a row's tokens)
        kept = torch.cat((real.new_ones(B, n), real), dim=1)
        last = torch.sort(kept.to(torch.int8), dim=1, stable=True).indices[:, -n:]
        return tapped, seen.gather(2, last[:, None, :, None].expand(B, G, n, D))

    def split_state(self, state: torch.Tensor | None):
        """(S [B, H, D, D], past values [B, H, taps - 1, D] or None): with taps, the state tensor keeps the
        past values as extra rows after the D x D state."""
        if state is None or self.taps is None:
            return state, None
        D = self.cfg.head_dim
        return state[:, :, :D].contiguous(), state[:, :, D:]

    def join_state(self, S: torch.Tensor, past: torch.Tensor | None) -> torch.Tensor:
        return S if past is None else torch.cat((S, past.to(S.dtype)), dim=2)

    def to_model(self, device, dtype: torch.dtype) -> "RNNHeads":
        """Move to a model's device and dtype, keeping the RoPE frequencies in float32."""
        inv_freq = self.inv_freq.float().to(device)
        self.to(device=device, dtype=dtype)
        self.inv_freq = inv_freq
        return self

    def init_state(self, batch: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        D = self.cfg.head_dim
        return torch.zeros(batch, self.skip.shape[0], D + self.cfg.taps - 1, D, device=device or self.inv_freq.device,
                           dtype=dtype)

    # ------------------------------------------------------------------------- entry points

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill / training: x [B, T, C], positions [B, T] -> (y [B, T, H*D], state [B, H, D + taps - 1, D])."""
        return self._run(functools.partial(scan, chunk=self.cfg.chunk), x, positions, state)

    def step(self, x: torch.Tensor, positions: torch.Tensor,
             state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one token per row: x [B, 1, C], positions [B, 1]; state as returned before."""
        return self._run(scan_step, x, positions, state)

    def naive_scan(self, x: torch.Tensor, positions: torch.Tensor,
                   state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference: forward() with the plain step loop instead of the chunked scan."""
        return self._run(scan_naive, x, positions, state)

    def _run(self, scan_fn, x, positions, state):
        return self._scan(scan_fn, self.project(x, positions), positions, state, x.dtype)

    def _scan(self, scan_fn, projected: tuple, positions, state, dtype: torch.dtype):
        """What follows `project`: the scan over its (q, k, v, log_a), taps, and the read-out in dtype."""
        q, k, v, log_a = projected
        S, past = self.split_state(state)
        o, S = scan_fn(q, k, v, log_a, S)
        tapped, past = self.tap_values(v, positions, past)
        return self.readout(o, v, dtype, tapped), self.join_state(S, past)


class GroupRNN(RNNHeads):
    """One replaced KV group: G query heads sharing one k/v projection, run as a linear RNN.

    Called as RNNHeads with H = G: y [B, T, G * D] goes into the group's slots of the layer's
    unchanged o_proj. Its parameters are what an adapter saves, per group.
    """

    def __init__(self, cfg: RNNConfig):
        super().__init__(cfg, cfg.heads)
        C, D, G = cfg.hidden_size, cfg.head_dim, cfg.heads
        self.q_proj = nn.Linear(C, G * D, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(C, D, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(C, D, bias=cfg.qkv_bias)
        self.q_norm = HeadRMSNorm(D, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = HeadRMSNorm(D, cfg.norm_eps) if cfg.qk_norm else None
        self.decay = nn.Linear(C, G)
        with torch.no_grad():
            self.decay.weight.zero_()
            self.decay.bias.fill_(inverse_softplus(-torch.log(torch.tensor(cfg.init_decay))))

    @classmethod
    def from_attention(cls, attn: nn.Module, rotary: nn.Module, group: int, cfg: RNNConfig) -> "GroupRNN":
        """Copy group `group`'s slices of attn.{q,k,v}_proj (and q_norm/k_norm) and the RoPE frequencies.

        Query heads group*G .. group*G + G - 1 share KV head `group` (HF's repeat_kv order).
        """
        rnn = cls(cfg)
        G, D = cfg.heads, cfg.head_dim
        q_rows = slice(group * G * D, (group + 1) * G * D)
        kv_rows = slice(group * D, (group + 1) * D)
        with torch.no_grad():
            for mine, theirs, rows in ((rnn.q_proj, attn.q_proj, q_rows), (rnn.k_proj, attn.k_proj, kv_rows),
                                       (rnn.v_proj, attn.v_proj, kv_rows)):
                mine.weight.copy_(theirs.weight[rows])
                if cfg.qkv_bias:
                    mine.bias.copy_(theirs.bias[rows])
            if cfg.qk_norm:
                rnn.q_norm.weight.copy_(attn.q_norm.weight)
                rnn.k_norm.weight.copy_(attn.k_norm.weight)
            rnn.inv_freq.copy_(rotary.inv_freq.float())
        return rnn

    def with_taps(self, taps: int) -> "GroupRNN":
        """A copy that also reads the taps - 1 previous values (their weights start at 0: same outputs)."""
        if self.cfg.taps != 1:
            raise ValueError(f"this GroupRNN already has {self.cfg.taps} taps")
        wider = GroupRNN(replace(self.cfg, taps=taps))
        result = wider.load_state_dict(self.state_dict(), strict=False)
        assert not result.unexpected_keys and set(result.missing_keys) <= {"taps"}, result
        wider.to(device=self.inv_freq.device, dtype=self.q_proj.weight.dtype)
        wider.inv_freq = self.inv_freq.clone()  # its precision as it was
        return wider

    def project(self, x: torch.Tensor, positions: torch.Tensor):
        """q [B, G, T, D] (scaled), k and v [B, G, T, D] (expanded views), log_a [B, G, T]; pads zeroed."""
        B, T, _ = x.shape
        G, D = self.cfg.heads, self.cfg.head_dim
        q = self.q_proj(x).view(B, T, G, D)
        k = self.k_proj(x).view(B, T, 1, D)
        v = self.v_proj(x).view(B, T, 1, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return self.heads_of(q, k, v, self.decay(x), positions)


def inverse_softplus(y: torch.Tensor) -> float:
    """b with softplus(b) = y (y > 0)."""
    return float(y + torch.log(-torch.expm1(-y)))


# ----------------------------------------------------------------------------- scans

def _compute_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.promote_types(q.dtype, torch.float32)


def _start(q: torch.Tensor, state: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    B, H, _, D = q.shape
    if state is None:
        return torch.zeros(B, H, D, D, device=q.device, dtype=dtype)
    assert state.shape == (B, H, D, D), f"state shape {tuple(state.shape)} != {(B, H, D, D)}"
    return state.to(dtype)


def scan_naive(q, k, v, log_a, state=None):
    """Reference loop: S_t = exp(log_a_t) S_{t-1} + k_t v_t^T, o_t = q_t^T S_t.

    q, k, v [B, H, T, D]; log_a [B, H, T] (<= 0); state [B, H, D, D] or None. Returns (o, state).
    """
    dtype = _compute_dtype(q)
    S = _start(q, state, dtype)
    q, k, v, log_a = q.to(dtype), k.to(dtype), v.to(dtype), log_a.to(dtype)
    out = []
    for t in range(q.shape[2]):
        S = log_a[:, :, t, None, None].exp() * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        out.append(torch.einsum("bhd,bhde->bhe", q[:, :, t], S))
    o = torch.stack(out, dim=2) if out else q.new_zeros(q.shape)
    return o, S


def scan_step(q, k, v, log_a, state):
    """One decode step (T = 1); same maths as scan_naive, kept separate so decode has no Python loop."""
    assert q.shape[2] == 1, "scan_step takes one token"
    dtype = _compute_dtype(q)
    S = _start(q, state, dtype)
    q, k, v = q[:, :, 0].to(dtype), k[:, :, 0].to(dtype), v[:, :, 0].to(dtype)
    S = log_a.to(dtype).exp()[..., None] * S + k[..., :, None] * v[..., None, :]
    return torch.einsum("bhd,bhde->bhe", q, S)[:, :, None], S


def scan_chunked(q, k, v, log_a, state=None, chunk: int = 64):
    """Chunked scan (SSD form): quadratic inside chunks of `chunk` tokens, a state between chunks.

    With cumulative log decays c_t = sum_{r <= t in the chunk} log_a_r, for t, s in one chunk:

        o_t = sum_{s <= t} exp(c_t - c_s) (q_t . k_s) v_s  +  exp(c_t) q_t^T S_in
        S_out = exp(c_L) S_in + sum_s exp(c_L - c_s) k_s v_s^T

    Every exponent is <= 0 (c is non-increasing; masked pairs get -inf before exp), so nothing
    overflows however long the chunk or small the decay. Shapes as scan_naive.
    """
    B, H, T, D = q.shape
    dtype = _compute_dtype(q)
    S = _start(q, state, dtype)
    if T == 0:
        return q.new_zeros(q.shape).to(dtype), S
    n = -(-T // chunk)
    pad = n * chunk - T  # padded tokens: zero q and k, log_a 0, so they change nothing

    def split(x):  # [B, H, T, ...] -> [B, H, n, chunk, ...]
        x = x.to(dtype)
        if pad:
            x = F.pad(x, (0, 0, 0, pad) if x.ndim == 4 else (0, pad))
        return x.view(B, H, n, chunk, *x.shape[3:])

    q, k, v, log_a = split(q), split(k), split(v), split(log_a)
    c = log_a.cumsum(-1)                                             # [B, H, n, L]
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    decay = (c[..., :, None] - c[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # [B, H, n, L, L]
    o = ((q @ k.transpose(-1, -2)) * decay) @ v                      # intra-chunk, [B, H, n, L, D]
    to_end = (c[..., -1:] - c).exp()                                 # [B, H, n, L]
    chunk_states = (k * to_end[..., None]).transpose(-1, -2) @ v      # [B, H, n, D, D]
    chunk_decay = c[..., -1].exp()                                    # [B, H, n]
    inter = []
    for i in range(n):  # n = T / chunk steps of state passing
        inter.append(q[:, :, i] @ S * c[:, :, i, :, None].exp())
        S = chunk_decay[:, :, i, None, None] * S + chunk_states[:, :, i]
    o = o + torch.stack(inter, dim=2)
    return o.reshape(B, H, n * chunk, D)[:, :, :T], S


def scan(q, k, v, log_a, state=None, chunk: int = 64):
    """The chunked scan: flash-linear-attention's Triton kernel on CUDA when it is installed and no
    gradient is wanted, else ours. fla-core 0.6 refuses its backward on Hopper GPUs with Triton below
    3.7.1 (wrong gradients, fla issue #640), which is what the GPU machine has (Triton 3.6): training
    runs on the PyTorch twin there."""
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, log_a, state))
    if q.is_cuda and q.dtype != torch.float64 and not wants_grad and _fla_available():
        return scan_fla(q, k, v, log_a, state)
    return scan_chunked(q, k, v, log_a, state, chunk)


def scan_fla(q, k, v, log_a, state=None):
    """scan_chunked's maths through fla's chunk_simple_gla ([B, T, H, D] layout; q arrives scaled)."""
    from fla.ops.simple_gla import chunk_simple_gla

    dtype = _compute_dtype(q)
    q, k, v = (x.to(dtype).transpose(1, 2).contiguous() for x in (q, k, v))
    o, state = chunk_simple_gla(q, k, v, g=log_a.to(dtype).transpose(1, 2).contiguous(), scale=1.0,
                                initial_state=None if state is None else state.to(dtype),
                                output_final_state=True)
    return o.transpose(1, 2), state


def _fla_available() -> bool:
    return importable("fla.ops.simple_gla", "the RecurFormer scan uses the PyTorch twin on the GPU")


def scan_backend(device: torch.device) -> str:
    """Which implementation runs the chunked scan on this device (for benchmark metadata)."""
    return "fla" if device.type == "cuda" and _fla_available() else "torch"
