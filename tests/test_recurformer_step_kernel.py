"""The fused decode step of a StackedRNN (recurformer/step_triton.py) against its twin, RNNHeads.step.

On a GPU the kernel runs compiled; on a CPU in Triton's interpreter (TRITON_INTERPRET=1, conftest.py).
Without Triton these skip.

The kernel starts from the projected row, so most tests give the stack an identity projection
(proj_weight = I): the twin's input is then exactly the kernel's, and both compute the same maths
from the same numbers. Tolerances (fixed per dtype):
  float32: kernel and twin within 1e-4 (tests/test_recurformer.TOL), outputs and states (measured:
  1.1e-5 at most).
  bfloat16: the kernel is held to the twin run in float64 on the same bfloat16 numbers: its float32
  state within 1e-4 (measured ~3e-6), its output within one bfloat16 step (2^-7 relative: the
  interpreter truncates float32 to bfloat16, a GPU rounds to nearest, half that). Against the bfloat16
  twin only in relative RMS, 3e-2 (measured 1.1e-2 for outputs, 4e-3 for states): the twin rounds the
  normed and rotated q and k to bfloat16 (2^-9 relative each) and the output RMS norm magnifies that
  where q S is small against |q| |S| (cancellation); there one element of the twin's output is off
  the float64 one by up to 0.12 while the kernel's stays within 0.03, so no elementwise bound on
  kernel - twin would be honest.
"""

import copy

import pytest
import torch

from pyramid_core.recurformer import stacked
from pyramid_core.recurformer.rnn import GroupRNN, RNNConfig, RNNHeads
from pyramid_core.recurformer.stacked import StackedRNN
from tests.test_recurformer import assert_close
from tests.test_stacked_rnn import randomise_state_params

from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.recurformer import step_triton
from pyramid_core.recurformer.step_triton import stacked_step_triton

C = 48           # hidden size of the non-identity stacks
PREFILL, STEPS = 5, 4


def make_stack(n, G, D, taps, norms, dtype, seed=0, identity=True) -> StackedRNN:
    """n random GroupRNNs (every parameter made to matter, RoPE scaled by 1.1) stacked; with `identity`
    the stack's projection is replaced by I, so its input is the projected row."""
    cfg = RNNConfig(hidden_size=C, head_dim=D, heads=G, qkv_bias=True, qk_norm=norms, taps=taps, rope_scaling=1.1)
    rnns = []
    for i in range(n):
        gen, rnn = torch.Generator().manual_seed(seed + i), GroupRNN(cfg)
        with torch.no_grad():
            for linear in (rnn.q_proj, rnn.k_proj, rnn.v_proj):
                linear.weight.normal_(0, C ** -0.5, generator=gen)
                linear.bias.normal_(0, 0.2, generator=gen)
            randomise_state_params(rnn, gen)
            if norms:
                rnn.q_norm.weight.normal_(1, 0.2, generator=gen)
                rnn.k_norm.weight.normal_(1, 0.2, generator=gen)
        rnns.append(rnn.to_model(DEVICE, dtype).eval())
    stack = StackedRNN(rnns)
    if identity:
        W = stack.proj_weight.shape[0]
        stack.proj_weight = torch.eye(W, device=DEVICE, dtype=dtype)
        stack.proj_bias = torch.zeros(W, device=DEVICE, dtype=dtype)
    return stack


def inputs(stack, batch, dtype, seed=1):
    """x [B, PREFILL + STEPS, width] and positions: row r starts with 2r left pads, and one decode step
    of the last row is a pad (-1) between real tokens."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, PREFILL + STEPS, stack.proj_weight.shape[1], generator=gen).to(DEVICE, dtype)
    pos = torch.arange(PREFILL + STEPS).repeat(batch, 1) - 2 * torch.arange(batch)[:, None]
    pos = pos.masked_fill(pos < 0, -1)
    pos[-1, PREFILL + 1] = -1
    return x, pos.to(DEVICE)


def assert_rel_rms(name, ref, out, bound):
    err = out.double() - ref.double()
    rel = float(err.pow(2).mean().sqrt() / ref.double().pow(2).mean().sqrt())
    assert rel <= bound, f"{name}: rel rms err {rel:.3g} > {bound}, max abs err {err.abs().max():.3g}"


def in_float64(stack: StackedRNN) -> StackedRNN:
    wide = copy.deepcopy(stack).double()
    wide.inv_freq = stack.inv_freq.double()
    return wide


CASES = [  # B, n groups, G heads a group, D, taps, q/k norms
    (1, 1, 1, 32, 1, False),
    (3, 3, 4, 64, 3, True),
    (3, 1, 4, 32, 3, False),
    (1, 3, 1, 64, 1, True),
    (3, 3, 1, 48, 3, True),   # D not a power of two: masked blocks
    (1, 1, 4, 48, 1, False),
]


def case_id(case):
    B, n, G, D, taps, norms = case
    return f"B{B}-n{n}-G{G}-D{D}-taps{taps}-{'norms' if norms else 'plain'}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", CASES, ids=case_id)
@torch.no_grad()
def test_kernel_equals_twin_over_steps(case, dtype):
    """Prefill (the twin's chunked scan), then STEPS decode steps, each path carrying its own state:
    outputs and states agree at every step, and the kernel advances the state tensor it was given."""
    B, n, G, D, taps, norms = case
    stack = make_stack(n, G, D, taps, norms, dtype)
    wide = in_float64(stack)
    x, pos = inputs(stack, B, dtype)
    _, state = stack(x[:, :PREFILL], pos[:, :PREFILL])
    mine, exact = state.clone(), state.double()
    for t in range(PREFILL, PREFILL + STEPS):
        y, state = RNNHeads.step(stack, x[:, t:t + 1], pos[:, t:t + 1], state)
        y_k, s_k = stacked_step_triton(stack, x[:, t].contiguous(), pos[:, t].contiguous(), mine)
        assert s_k is mine and y_k.shape == y.shape and y_k.dtype == dtype
        for name, ref, out in ((f"step {t} y", y, y_k), (f"step {t} state", state, mine)):
            if dtype == torch.float32:
                assert_close(name, ref, out, dtype)
            else:
                assert_rel_rms(name, ref, out, 3e-2)
        if dtype == torch.bfloat16:
            y64, exact = RNNHeads.step(wide, x[:, t:t + 1].double(), pos[:, t:t + 1], exact)
            assert_close(f"step {t} state against float64", exact, mine, torch.float32)
            assert torch.allclose(y_k.double(), y64, atol=1e-4, rtol=2 ** -7), \
                f"step {t} y against float64: max abs err {(y_k.double() - y64).abs().max():.3g}"


@torch.no_grad()
def test_a_pad_leaves_state_and_past_values_unchanged():
    """A pad row's state (the D x D part and the taps' past values) is exactly what it was."""
    stack = make_stack(2, 2, 32, 4, True, torch.float32)
    x, pos = inputs(stack, 2, torch.float32)
    _, state = stack(x[:, :PREFILL], pos[:, :PREFILL])
    before = state.clone()
    step_pos = torch.tensor([7, -1], device=DEVICE)
    stacked_step_triton(stack, x[:, PREFILL].contiguous(), step_pos, state)
    assert torch.equal(state[1], before[1])
    assert not torch.equal(state[0], before[0])
    # a real token: the past values (rows 32 .. 34) move up one and its own v (its group's) comes last
    assert torch.equal(state[0, :, 32:34], before[0, :, 33:35])
    v = x[0, PREFILL, 4 * 32 + 2 * 32:4 * 32 + 4 * 32].view(2, 1, 32)  # after every q and every k
    assert torch.equal(state[0, :, 34], v.expand(2, 2, 32).reshape(4, 32))


@torch.no_grad()
def test_no_state_is_a_zero_state():
    stack = make_stack(3, 2, 32, 3, False, torch.float32)
    x, pos = inputs(stack, 3, torch.float32)
    y0, s0 = stacked_step_triton(stack, x[:, 0].contiguous(), pos[:, -1].contiguous(), None)
    y1, s1 = stacked_step_triton(stack, x[:, 0].contiguous(), pos[:, -1].contiguous(), stack.init_state(3))
    assert torch.equal(y0, y1) and torch.equal(s0, s1)


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "twin"])
@torch.no_grad()
def test_a_step_writes_its_heads_into_the_layers_o_proj_input(kernel, monkeypatch):
    """step_projected with out: each head's y lands at its place in out (here a shuffled subset of 10
    heads), the other heads of out are untouched, and the state moves as without out; the projection may
    be a column slice of a wider matmul output (the joint projection's)."""
    stack = make_stack(2, 2, 32, 3, True, torch.float32)  # 4 heads of 32
    x, pos = inputs(stack, 3, torch.float32)
    _, state = stack(x[:, :PREFILL], pos[:, :PREFILL])
    wide = torch.cat((torch.randn(3, 1, 7, device=DEVICE), x[:, PREFILL:PREFILL + 1]), dim=-1)[:, :, 7:]
    monkeypatch.setattr(stacked, "fused_step_fits", lambda *a: kernel)
    y, alone = stack.step_projected(x[:, PREFILL:PREFILL + 1], pos[:, PREFILL:PREFILL + 1], state.clone())
    out = torch.randn(3, 10, 1, 32, device=DEVICE)
    before, places = out.clone(), torch.tensor([7, 2, 9, 4], device=DEVICE)
    got, moved = stack.step_projected(wide, pos[:, PREFILL:PREFILL + 1], state.clone(), out, places)
    assert got is out
    assert_close("heads in place", y.view(3, 4, 32), out[:, places, 0], torch.float32)
    others = [h for h in range(10) if h not in places.tolist()]
    assert torch.equal(out[:, others], before[:, others])
    assert_close("state", alone, moved, torch.float32)


# ----------------------------------------------------------------------------- routing

def test_the_twin_runs_on_a_cpu_and_when_switched_off(monkeypatch):
    stack = make_stack(2, 2, 32, 1, False, torch.float32, identity=False)
    x = torch.zeros(2, 1, C, device=DEVICE)
    monkeypatch.setattr(stacked, "FUSED_STEP", True)
    assert stacked.fused_step_fits(x, None) == (DEVICE == "cuda")
    assert not stacked.fused_step_fits(x.double(), None)
    monkeypatch.setattr(stacked, "FUSED_STEP", False)
    assert not stacked.fused_step_fits(x, stack.init_state(2))


@torch.no_grad()
def test_stacked_step_routes_through_the_kernel(monkeypatch):
    """StackedRNN.step with the kernel allowed (forced on the CPU) runs the projection, then the kernel,
    and gives the twin's outputs and states over the steps."""
    stack = make_stack(3, 2, 32, 3, True, torch.float32, identity=False)
    x, pos = inputs(stack, 3, torch.float32)
    _, state = stack(x[:, :PREFILL], pos[:, :PREFILL])
    mine, calls = state.clone(), []
    kernel = stacked_step_triton
    monkeypatch.setattr(step_triton, "stacked_step_triton", lambda *a: calls.append(1) or kernel(*a))
    monkeypatch.setattr(stacked, "fused_step_fits", lambda *a: True)
    for t in range(PREFILL, PREFILL + STEPS):
        y, state = RNNHeads.step(stack, x[:, t:t + 1], pos[:, t:t + 1], state)
        y_k, mine = stack.step(x[:, t:t + 1], pos[:, t:t + 1], mine)
        assert_close(f"step {t} y", y, y_k, torch.float32)
        assert_close(f"step {t} state", state, mine, torch.float32)
    assert len(calls) == STEPS


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphs"])
def test_engine_decodes_alike_with_the_fused_step(graphs, monkeypatch, tmp_path):
    """The engine with the kernel in every stacked step (forced on the CPU: the interpreter; on CUDA
    the compiled kernel) gives the twin's tokens, eagerly and through the decode graphs, whose state
    buffer the kernel advances in place."""
    from pyramid_core import generate
    from pyramid_core.policies import RecurFormerPolicy
    from tests.test_stacked_rnn import LAYOUT, WIDE, save_random_adapter
    from tests.tiny_models import tiny_model

    lm = tiny_model("llama", **WIDE)
    if DEVICE == "cuda":
        lm.model.to("cuda")
    save_random_adapter(lm, LAYOUT, 3, tmp_path)
    ids = torch.randint(3, 97, (3, 30), generator=torch.Generator().manual_seed(5)).to(DEVICE)
    mask = torch.ones_like(ids)
    mask[1, :4], mask[2, :9] = 0, 0
    policy = RecurFormerPolicy(adapter=str(tmp_path))
    calls = []
    kernel = stacked_step_triton
    monkeypatch.setattr(step_triton, "stacked_step_triton", lambda *a: calls.append(1) or kernel(*a))

    def tokens():
        return [r.token_ids for r in generate(lm, ids, mask, policy=policy, max_new_tokens=8, cuda_graphs=graphs)]

    monkeypatch.setattr(stacked, "fused_step_fits", lambda *a: True)
    fused = tokens()
    assert calls, "the kernel never ran"
    monkeypatch.setattr(stacked, "fused_step_fits", lambda *a: False)
    assert fused == tokens()
