"""The Triton decode-attention kernel against its reference, the engine's SDPA path.

On a GPU the kernel runs compiled; on a CPU it runs in Triton's interpreter (TRITON_INTERPRET=1, set in
conftest.py before Triton is imported), so CI checks the same kernel source. Without Triton these skip.
"""

import pytest
import torch

from pyramid_core.attention import attention

from tests.triton_device import DEVICE  # before the Triton imports: skips this module where Triton cannot run
from pyramid_core.kernels import decode_triton
from pyramid_core.kernels.decode_triton import decode_attention_and_logits, decode_attention_triton


def cache_view(B, H_kv, T, D, capacity, dtype, gen):
    """Keys and values as the cache hands them over: the first T slots of a larger buffer."""
    k = torch.randn(B, H_kv, capacity, D, generator=gen).to(DEVICE, dtype)
    v = torch.randn(B, H_kv, capacity, D, generator=gen).to(DEVICE, dtype)
    return k[:, :, :T], v[:, :, :T]


def positions_with_holes(B, T, gen):
    """Right-aligned rows: empty slots (-1) in front of shorter rows and where a policy dropped slots;
    the last slot is the query's own token."""
    pos = torch.arange(T).repeat(B, 1) * 2 + 3  # compressed: original positions are not slot indices
    for b in range(B):
        front = int(torch.randint(0, T // 2 + 1, (1,), generator=gen))
        pos[b, :front] = -1
        pos[b, (torch.rand(T, generator=gen) < 0.2)] = -1
        pos[b, -1] = 2 * T + 10
    return pos.to(DEVICE)


def reference(q, k, v, q_pos, k_pos, window):
    return attention(q.float(), k.float(), v.float(), q_pos, k_pos, scale=q.shape[-1] ** -0.5,
                     holes=True, window=window, causal_square=False, decode_kernel=False)


CASES = [  # B, H, H_kv, T, D, window
    (2, 4, 4, 100, 32, None),
    (3, 8, 2, 257, 64, None),   # GQA
    (3, 6, 3, 129, 16, 41),     # sliding window (its edge falls on a held slot)
    (1, 2, 1, 1, 16, None),     # the first decode step of a one-token prompt
]


@pytest.mark.parametrize("B, H, H_kv, T, D, window", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("splits", [1, 3, 8])
def test_kernel_equals_sdpa_path(B, H, H_kv, T, D, window, dtype, splits):
    """Whole rows, and rows split among programs and merged (flash decoding). A split covers whole blocks of
    BLOCK_T slots, so 3 or 8 splits asked of T = 100-257 run as 1-3; a split may hold only empty slots (the
    holes in front, or outside the window), which the merge must weigh by nothing."""
    gen = torch.Generator().manual_seed(B * 1000 + T)
    k, v = cache_view(B, H_kv, T, D, T + 13, dtype, gen)
    k_pos = positions_with_holes(B, T, gen)
    q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE, dtype)
    q_pos = k_pos[:, -1:].clone()
    out = decode_attention_triton(q, k, v, q_pos, k_pos, D ** -0.5, window, splits)
    assert out.shape == q.shape and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out.float(), reference(q, k, v, q_pos, k_pos, window), atol=tol, rtol=tol)


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "sdpa"])
def test_heads_written_into_their_places_of_a_wider_output(splits, kernel):
    """attention(into=(full, heads)) (RecurFormer's o_proj input, whose other heads are the recurrences'):
    head h lands at full[:, heads[h]], by the kernel's own store or the SDPA path's copy; full's other
    heads keep what they held."""
    gen = torch.Generator().manual_seed(11)
    B, H, H_kv, T, D, H_full = 3, 4, 2, 150, 32, 7
    k, v = cache_view(B, H_kv, T, D, T + 5, torch.float32, gen)
    k_pos = positions_with_holes(B, T, gen)
    q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE)
    q_pos = k_pos[:, -1:].clone()
    places = torch.tensor([5, 0, 6, 2], device=DEVICE)
    full = torch.randn(B, H_full, 1, D, generator=gen).to(DEVICE)
    before = full.clone()
    got = (decode_attention_triton(q, k, v, q_pos, k_pos, D ** -0.5, None, splits, into=(full, places)) if kernel
           else attention(q, k, v, q_pos, k_pos, scale=D ** -0.5, holes=True, window=None, causal_square=False,
                          decode_kernel=False, into=(full, places)))
    assert got is full
    torch.testing.assert_close(full[:, places], reference(q, k, v, q_pos, k_pos, None), atol=1e-5, rtol=1e-5)
    others = [h for h in range(H_full) if h not in places.tolist()]
    assert torch.equal(full[:, others], before[:, others])


@pytest.mark.parametrize("B, H, H_kv, T, D, window", [c for c in CASES if c[-1] is None])
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("block", [128, 64])
def test_logits_and_split_statistics_give_each_slots_probability(B, H, H_kv, T, D, window, splits, block,
                                                                  monkeypatch):
    """decode_attention_and_logits (H2O's steady step): the same output, every slot's scaled logit (-inf where
    empty or after the query), and per split a max and a sum of exp whose log-sum-exp over the splits is
    the row's: exp(logit - lse) is then each slot's probability, as torch computes it. In blocks of 128
    slots (a long cache's when split, decode_triton.LONG_SPLIT_BLOCK_T) and of 64."""
    monkeypatch.setattr(decode_triton, "BLOCK_T", block)
    gen = torch.Generator().manual_seed(B * 100 + T)
    k, v = cache_view(B, H_kv, T, D, T + 13, torch.float32, gen)
    k_pos = positions_with_holes(B, T, gen)
    q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE)
    q_pos = k_pos[:, -1:] - int(T > 1)  # the last slot in the query's future, where another one is visible
    scale = D ** -0.5
    out, logits, m, s = decode_attention_and_logits(q, k, v, q_pos, k_pos, scale, splits)
    torch.testing.assert_close(out, decode_attention_triton(q, k, v, q_pos, k_pos, scale, None, splits))
    keys = k.float().repeat_interleave(H // H_kv, 1)  # [B, H, T, D]
    visible = ((k_pos >= 0) & (k_pos <= q_pos))[:, None]  # [B, 1, T]
    want = torch.where(visible, (q.float() @ keys.transpose(-1, -2))[:, :, 0] * scale, float("-inf"))
    torch.testing.assert_close(logits.view(B, H, T), want, atol=1e-5, rtol=1e-5)
    assert m.shape == s.shape and m.shape[0] == B * H and 1 <= m.shape[1] <= splits
    lse = torch.logsumexp(m + s.log(), dim=1).view(B, H, 1)
    torch.testing.assert_close(lse, torch.logsumexp(want, dim=-1, keepdim=True), atol=1e-5, rtol=1e-5)


def test_only_a_long_cache_split_among_programs_takes_long_blocks():
    """On 132 SMs: H2O's 206 slots at batch 1 (32 heads) in blocks of 64 and 4 splits; 1280 slots in blocks of
    128; Table 1's rows x heads (134 x 40) fill the GPU unsplit, in blocks of 64 however long the cache."""
    assert decode_triton.block_and_splits(32, 206, 132) == (64, 4)
    assert decode_triton.block_and_splits(32, 1280, 132) == (128, 10)
    assert decode_triton.block_and_splits(134 * 40, 300, 132) == (64, 1)
    assert decode_triton.block_and_splits(134 * 40, 768, 132) == (64, 1)


def test_the_voters_logits_split_a_filled_gpu_in_two():
    """With PyramidInfer's voter logits (newest) Table 1's 160 rows x 40 heads, which fill 132 SMs unsplit, run
    each (row, head) as two programs in blocks of 64 (its longest layer, 665 slots, too); a cache of one block
    stays whole; where filling the GPU splits more (batch 1) the logits change nothing."""
    assert decode_triton.block_and_splits(160 * 40, 665, 132) == (64, 1)
    assert decode_triton.block_and_splits(160 * 40, 665, 132, newest=True) == (64, 2)
    assert decode_triton.block_and_splits(160 * 40, 300, 132, newest=True) == (64, 2)
    assert decode_triton.block_and_splits(160 * 40, 64, 132, newest=True) == (64, 1)
    assert decode_triton.block_and_splits(32, 1280, 132, newest=True) == (128, 10)
    assert decode_triton.block_and_splits(32, 206, 132, newest=True) == (64, 4)


def test_kernel_ignores_empty_and_future_slots():
    """Changing what sits in empty slots or after the query's position changes nothing."""
    gen = torch.Generator().manual_seed(7)
    B, H, T, D = 2, 4, 70, 32
    k, v = cache_view(B, H, T, D, T, torch.float32, gen)
    k_pos = positions_with_holes(B, T, gen)
    q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE)
    q_pos = k_pos[:, -1:] - 1  # the last slot is now in the query's future
    before = decode_attention_triton(q, k, v, q_pos, k_pos, D ** -0.5, None)
    hidden = ((k_pos < 0) | (k_pos > q_pos))[:, None, :, None]
    k2, v2 = k.masked_fill(hidden, 1e4).contiguous(), v.masked_fill(hidden, -1e4).contiguous()
    after = decode_attention_triton(q, k2, v2, q_pos, k_pos, D ** -0.5, None)
    torch.testing.assert_close(after, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the engine calls the kernel on CUDA only (GPU machine)")
@pytest.mark.parametrize("mode", ["baseline", "pyramid"])
def test_engine_decodes_alike_with_the_kernel(mode, monkeypatch):
    """The engine with the kernel on every decode step (batch threshold lifted) emits the tokens and keeps
    the slots that it does with SDPA, on left-padded rows of different lengths (holes)."""
    from pyramid_core import generate
    from pyramid_core.kernels import decode
    from pyramid_core.policies.registry import make_policy
    from tests.test_graphs import left_padded
    from tests.tiny_models import tiny_model

    monkeypatch.setattr(decode, "MIN_PROGRAMS_PER_SM", 0)
    calls = []
    kernel_fn = decode_attention_triton
    monkeypatch.setattr(decode_triton, "decode_attention_triton", lambda *a, **k: calls.append(1) or kernel_fn(*a, **k))
    lm = tiny_model("llama")
    lm.model.to("cuda")
    ids, mask = (t.to("cuda") for t in left_padded((45, 90, 70)))
    policy = make_policy(mode, {"min_context_length": 8} if mode == "pyramid" else {})
    runs = {}
    for kernel in (True, False):
        runs[kernel] = [(r.token_ids, r.kept_tokens_per_row)
                        for r in generate(lm, ids, mask, policy=policy, max_new_tokens=40, decode_kernel=kernel)]
    assert runs[True] == runs[False]
    decode_steps = len(runs[True]) - 1
    assert decode_steps > 0 and len(calls) == decode_steps * lm.config.num_hidden_layers  # kernel on only


@pytest.mark.parametrize("splits", [1, 2])
def test_unwritten_reserved_slots_are_never_read(splits):
    """The step graph (step_graphs.py) attends over a whole reservation: slots past the written ones have
    position -1, and whatever their memory holds (here NaN) must not reach the output, as the kernel's
    masked loads promise; the result equals attention over the written slots alone."""
    gen = torch.Generator().manual_seed(3)
    B, H, H_kv, D, written, capacity = 2, 4, 2, 32, 37, 192  # 2 splits: the second all unwritten
    k = torch.randn(B, H_kv, capacity, D, generator=gen).to(DEVICE)
    v = torch.randn(B, H_kv, capacity, D, generator=gen).to(DEVICE)
    k[:, :, written:], v[:, :, written:] = float("nan"), float("nan")
    pos = torch.full((B, capacity), -1, dtype=torch.long, device=DEVICE)
    pos[:, :written] = torch.arange(written, device=DEVICE)
    q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE)
    q_pos = torch.full((B, 1), written - 1, dtype=torch.long, device=DEVICE)
    out = decode_attention_triton(q, k, v, q_pos, pos, 0.2, None, splits)
    reference = attention(q, k[:, :, :written], v[:, :, :written], q_pos, pos[:, :written], scale=0.2, holes=False,
                          window=None, causal_square=False, decode_kernel=False)
    assert not out.isnan().any()
    assert torch.allclose(out, reference, atol=1e-5)


@pytest.mark.parametrize("splits", [1, 2])
def test_a_count_of_written_slots_bounds_what_is_read(splits):
    """written= (the step graph's count of the slots in use): slots past it are never read, whatever their
    positions say, and a hole before it whose memory holds NaN (a row shorter than the others) adds nothing:
    the result is attention over the counted slots alone."""
    gen = torch.Generator().manual_seed(5)
    B, H, H_kv, D, written, capacity = 3, 4, 2, 32, 70, 160
    k = torch.randn(B, H_kv, capacity, D, generator=gen).to(DEVICE)
    v = torch.randn(B, H_kv, capacity, D, generator=gen).to(DEVICE)
    pos = torch.arange(capacity, device=DEVICE).repeat(B, 1)  # past the count: valid-looking positions
    pos[1, :9] = -1
    k[1, :, :9], v[1, :, :9] = float("nan"), float("nan")
    q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE)
    q_pos = torch.full((B, 1), capacity, dtype=torch.long, device=DEVICE)  # would see every slot
    count = torch.tensor([written], device=DEVICE)
    out = decode_attention_triton(q, k, v, q_pos, pos, D ** -0.5, None, splits, written=count)
    clean_k, clean_v = (x[:, :, :written].nan_to_num(0.0) for x in (k, v))  # SDPA would carry masked NaN
    want = reference(q, clean_k, clean_v, q_pos, pos[:, :written], None)
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), want, atol=1e-5, rtol=1e-5)
    unbounded = decode_attention_triton(q, k, v, q_pos, pos, D ** -0.5, None, splits)
    assert (unbounded[[0, 2]] - out[[0, 2]]).abs().max() > 1e-3  # the count, not the positions, bounded it


@pytest.mark.parametrize("B, H, H_kv, T, D, window", CASES)
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("n", [5, 70, 300])
def test_newest_slots_logits_equal_the_twins(B, H, H_kv, T, D, window, splits, n):
    """newest= (PyramidInfer's voter rows): each head's scaled logits over the n newest slots, newest first,
    -inf for holes, slots outside a window and ages past the oldest slot (n = 300 > T), and the log-sum-exp of
    its whole softmax; the SDPA path's twin (newest_logits_torch) gives the same, and the output is unchanged.
    Split (the merge kernel writes the log-sum-exp) and whole."""
    from pyramid_core.kernels.scores import newest_logits_torch, newest_probs_torch

    gen = torch.Generator().manual_seed(B * 10 + T + n)
    k, v = cache_view(B, H_kv, T, D, T + 13, torch.float32, gen)
    k_pos = positions_with_holes(B, T, gen)
    q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE)
    q_pos = k_pos[:, -1:].clone()
    newest = (torch.full((B, H, n), float("nan"), device=DEVICE), torch.full((B, H), float("nan"), device=DEVICE))
    out = decode_attention_triton(q, k, v, q_pos, k_pos, D ** -0.5, window, splits, newest=newest)
    torch.testing.assert_close(out, decode_attention_triton(q, k, v, q_pos, k_pos, D ** -0.5, window, splits))
    logits, lse = (t[:, :, 0] for t in newest_logits_torch(q, q_pos, k, k_pos, D ** -0.5, n, window))
    torch.testing.assert_close(newest[0], logits, atol=1e-5, rtol=1e-5)  # every element written: no NaN left
    torch.testing.assert_close(newest[1], lse, atol=1e-5, rtol=1e-5)
    # the twin is what its name says: softmax by hand over the visible slots, read newest first
    keys = k.float().repeat_interleave(H // H_kv, 1)
    visible = (k_pos >= 0) & (k_pos <= q_pos) & ((k_pos > q_pos - window) if window else True)
    all_logits = torch.where(visible[:, None], (q.float() @ keys.transpose(-1, -2))[:, :, 0] * D ** -0.5,
                             float("-inf"))
    probs = (logits - lse[..., None]).exp()
    torch.testing.assert_close(probs[:, :, :min(n, T)], torch.softmax(all_logits, -1).flip(-1)[:, :, :n],
                               atol=1e-6, rtol=1e-5)
    assert torch.equal(probs[:, :, T:], torch.zeros_like(probs[:, :, T:]))
    mean = newest_probs_torch(q, q_pos, k, k_pos, D ** -0.5, n) if window is None else None  # the prefill's rows
    if mean is not None:
        torch.testing.assert_close(mean[:, 0], probs.mean(1))


@pytest.mark.parametrize("splits", [1, 2])
def test_newest_logits_count_back_from_the_written_slots(splits):
    """Over a reservation (the step graph's written count), age 0 is the last written slot, not the buffer's
    last; the SDPA path's twin, told the same count on the device, agrees."""
    from pyramid_core.kernels.scores import newest_logits_torch

    gen = torch.Generator().manual_seed(9)
    B, H, H_kv, D, used, capacity, n = 2, 4, 2, 32, 90, 200, 40
    k = torch.randn(B, H_kv, capacity, D, generator=gen).to(DEVICE)
    v = torch.randn(B, H_kv, capacity, D, generator=gen).to(DEVICE)
    pos = torch.full((B, capacity), -1, dtype=torch.long, device=DEVICE)
    pos[:, :used] = torch.arange(used, device=DEVICE)
    q = torch.randn(B, H, 1, D, generator=gen).to(DEVICE)
    q_pos = torch.full((B, 1), used - 1, dtype=torch.long, device=DEVICE)
    written = torch.tensor([used], device=DEVICE)
    newest = (torch.empty(B, H, n, device=DEVICE), torch.empty(B, H, device=DEVICE))
    decode_attention_triton(q, k, v, q_pos, pos, 0.2, None, splits, written=written, newest=newest)
    alone = [t[:, :, 0] for t in newest_logits_torch(q, q_pos, k[:, :, :used], pos[:, :used], 0.2, n)]
    over_all = [t[:, :, 0] for t in newest_logits_torch(q, q_pos, k, pos, 0.2, n, written=written)]
    for got, twin, want in zip(newest, over_all, alone):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(twin, want)
    assert (newest[0][:, :, 0] > float("-inf")).all()  # age 0 is the query's own slot, which it always sees
