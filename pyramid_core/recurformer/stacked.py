"""StackedRNN: the replaced groups of one layer run as one recurrence with a leading group dimension.

A layer's n GroupRNNs (one per replaced KV group, one RNNConfig) each launch ~40 small kernels per
decode step: projections, RoPE, decay, state update, read-out. On the Llama-2-7B shape with 25% of
the groups replaced (8 a layer) that made a decode step ~4.7x slower than the baseline's on an H200,
CUDA graphs or not (benchmarks/modes/modes_quick_2026-11-30_streaming_ring.md). Here their
parameters are stacked once, so a step is one projection matmul (every group's q, k, v and decay
rows in one weight), one RoPE, one state update and one read-out over n * G heads: the kernel count
of a single group, whatever n. The prefill runs the same way (one chunked scan over n * G heads).
With FUSED_STEP on, a decode step on CUDA is one matmul and one Triton kernel (step_triton.py) for
everything after it; RNNHeads.step is that kernel's twin, and what runs elsewhere or when it is off.

The maths is GroupRNN's (RNNHeads runs both); the tests compare a stack with its groups run one by
one. The stack holds copies of the groups' tensors: it is derived data, built once per set of
modules (`stack`) and rebuilt if a module's tensors change.
"""

from __future__ import annotations

import functools
import os
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..optional import importable
from ..recurrent_groups import place_heads
from .rnn import GroupRNN, RNNHeads, head_rms_norm, scan, scan_step

# the decode step runs the fused Triton kernel where it fits (fused_step_fits); False keeps the PyTorch
# twin everywhere (benchmarks and tests compare the two). Read at each step: a CUDA graph keeps the
# path it was captured with. On since its GPU run of 2026-11-30 (H200: the kernel tests pass compiled
# and in graphs; a 7B layer's step 19-21 us against the twin's 77-192 us, benchmarks/rnn_step_kernel.json).
# PYRAMID_FUSED_RNN_STEP=0 turns it off.
FUSED_STEP = os.environ.get("PYRAMID_FUSED_RNN_STEP", "1") != "0"


class StackedRNN(RNNHeads):
    """n GroupRNNs of one layer as one module; heads in group order (group i's G heads, then i + 1's).

    Called like a GroupRNN with H = n * G: y [B, T, n * G * D], state [B, n * G, D + taps - 1, D],
    which is the groups' own states concatenated on dim 1.
    """

    def __init__(self, rnns: list[GroupRNN]):
        cfg = rnns[0].cfg
        check_stackable(rnns)
        n, G = len(rnns), cfg.heads
        super().__init__(cfg, n * G)
        self.groups = n
        first = rnns[0].q_proj.weight
        with torch.no_grad():
            # rows: every group's q, then every k, every v, every decay gate: one matmul for all
            linears = [[r.q_proj for r in rnns], [r.k_proj for r in rnns], [r.v_proj for r in rnns],
                       [r.decay for r in rnns]]
            weight = torch.cat([m.weight for part in linears for m in part])
            bias = torch.cat([m.bias if m.bias is not None else first.new_zeros(m.out_features)
                              for part in linears for m in part])
            self.widths = [sum(m.out_features for m in part) for part in linears]
            self.register_buffer("proj_weight", weight)
            self.register_buffer("proj_bias", bias)
            norms = cfg.qk_norm
            # per group [n, 1, D]: broadcasts over a group's heads in [B, T, n, G, D]
            self.register_buffer("q_norm", torch.stack([r.q_norm.weight[None] for r in rnns]) if norms else None)
            self.register_buffer("k_norm", torch.stack([r.k_norm.weight[None] for r in rnns]) if norms else None)
            # in the groups' dtype, as each GroupRNN multiplies by its own
            self.out_weight = nn.Parameter(torch.cat([r.out_weight for r in rnns]))
            self.skip = nn.Parameter(torch.cat([r.skip for r in rnns]))
            if self.taps is not None:
                self.taps = nn.Parameter(torch.cat([r.taps for r in rnns]))
            self.inv_freq = rnns[0].inv_freq.clone()
        self.requires_grad_(False)  # derived from the groups: train those, not this

    def project(self, x: torch.Tensor, positions: torch.Tensor):
        """As GroupRNN.project over n * G heads: q [B, nG, T, D] (scaled), k, v [B, nG, T, D], log_a [B, nG, T]."""
        return self.heads_from(F.linear(x, self.proj_weight, self.proj_bias), positions)

    def heads_from(self, proj: torch.Tensor, positions: torch.Tensor):
        """project's outputs from the projection matmul's output proj [B, T, W]."""
        B, T, _ = proj.shape
        n, G, D = self.groups, self.cfg.heads, self.cfg.head_dim
        q, k, v, gate = proj.split(self.widths, dim=-1)
        q, k, v = q.view(B, T, n, G, D), k.view(B, T, n, 1, D), v.view(B, T, n, D)
        if self.q_norm is not None:
            q, k = head_rms_norm(q, self.q_norm, self.cfg.norm_eps), head_rms_norm(k, self.k_norm, self.cfg.norm_eps)
        return self.heads_of(q.reshape(B, T, n * G, D), k.view(B, T, n, D), v, gate, positions)

    def step(self, x: torch.Tensor, positions: torch.Tensor,
             state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one token per row: x [B, 1, C], positions [B, 1]; state [B, nG, D + taps - 1, D].

        On CUDA: the projection matmul, then the fused kernel (step_triton.py), which advances the state
        in place and returns it. Elsewhere RNNHeads.step, its twin, which returns a new state."""
        if not fused_step_fits(x, state):
            return super().step(x, positions, state)
        from .step_triton import stacked_step_triton

        proj = F.linear(x[:, 0], self.proj_weight, self.proj_bias)  # [B, W]
        return stacked_step_triton(self, proj, positions.reshape(-1).contiguous(), state)

    # a layer's joint projection (joint_projection.py) computes proj with its attention heads' q, k, v:
    # these take it in place of x

    def forward_projected(self, proj: torch.Tensor, positions: torch.Tensor,
                          state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() from proj [B, T, W], the projection matmul's output for x."""
        scan_fn = functools.partial(scan, chunk=self.cfg.chunk)
        return self._scan(scan_fn, self.heads_from(proj, positions), positions, state, proj.dtype)

    def step_projected(self, proj: torch.Tensor, positions: torch.Tensor, state: torch.Tensor | None,
                       out: torch.Tensor | None = None,
                       out_heads: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """step() from proj [B, 1, W] (a view with unit column stride will do). With out [B, H_layer, 1, D]
        (the layer's o_proj input) and out_heads [n * G] (its heads' indices there), y goes into those
        heads of out, which is returned in y's place: the kernel stores it there directly."""
        if not fused_step_fits(proj, state):
            y, state = self._scan(scan_step, self.heads_from(proj, positions), positions, state, proj.dtype)
            return (y if out is None else place_heads(out, out_heads, y)), state
        from .step_triton import stacked_step_triton

        return stacked_step_triton(self, proj[:, 0], positions.reshape(-1).contiguous(), state, out, out_heads)


def fused_step_fits(x: torch.Tensor, state: torch.Tensor | None) -> bool:
    """Whether a stack's decode step runs the fused kernel: FUSED_STEP on, one token per row on CUDA in
    fp16/bf16/fp32 (float64 stays on the twin, which computes in float64), a float32 state, Triton."""
    return FUSED_STEP and x.is_cuda and x.shape[1] == 1 \
        and x.dtype in (torch.float16, torch.bfloat16, torch.float32) \
        and (state is None or state.dtype == torch.float32) \
        and _triton()


def step_backend(device: torch.device) -> str:
    """Which implementation runs a stack's decode step on this device (for benchmark metadata)."""
    return "triton" if FUSED_STEP and device.type == "cuda" and _triton() else "torch"


def _triton() -> bool:
    return importable("triton", "the RecurFormer decode step uses the PyTorch twin on the GPU")


def check_stackable(rnns: list[GroupRNN]) -> None:
    """Raise ValueError unless the GroupRNNs can run as one stack: one config, one RoPE, one device
    and dtype (what an adapter gives every group of a layer)."""
    if not rnns:
        raise ValueError("no GroupRNNs to stack")
    first = rnns[0]
    for rnn in rnns[1:]:
        if rnn.cfg != first.cfg:
            raise ValueError(f"GroupRNNs of one layer differ in config: {rnn.cfg} vs {first.cfg}")
        if not torch.equal(rnn.inv_freq, first.inv_freq):
            raise ValueError("GroupRNNs of one layer differ in RoPE frequencies")
        w, w0 = rnn.q_proj.weight, first.q_proj.weight
        if (w.device, w.dtype) != (w0.device, w0.dtype):
            raise ValueError(f"GroupRNNs of one layer sit on {w.device}/{w.dtype} and {w0.device}/{w0.dtype}")


# the stack of each set of modules, kept while its first module lives: built once, not per request
_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stack(rnns: list[GroupRNN]) -> StackedRNN:
    """The StackedRNN of these GroupRNNs (in this order), built on first use and reused while none of
    their tensors has been replaced or changed in place (training, load_state_dict, to())."""
    key = signature(rnns)
    cached = _STACKS.get(rnns[0])
    if cached is not None and cached[0] == key:
        return cached[1]
    stacked = StackedRNN(rnns)
    _STACKS[rnns[0]] = (key, stacked)
    return stacked


def signature(rnns: list[GroupRNN]) -> tuple:
    """What a stack was built from: the modules, each tensor's identity and in-place version (an
    inference tensor has no version; it can only change inside inference mode, which nothing does)."""
    def version(t):
        return -1 if t.is_inference() else t._version
    return tuple((id(r), tuple((id(t), version(t)) for t in (*r.parameters(), *r.buffers()))) for r in rnns)
