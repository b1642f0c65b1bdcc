"""Every figure measured from a run's trace records, defined once: the CLI, evaluation, the app and
visual/ all read them from here.

A run is the list of StepRecords of one generation (step 0 is the prefill). Counting rules: a
sequence's token at a step counts as generated when the sequence had not finished at the previous step
(so an EOS token counts and the filler after it does not); the prefill's sampled token is generated
token 0.

Pure Python over the records, no torch. visual/ imports only trace.py (docs/design.md), so trace.py's
RunSummary carries these figures to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .trace import StepRecord

MIB = 2**20


def first_sequence_tokens(run: Sequence[StepRecord]) -> list[int]:
    """The first sequence's generated token ids, up to and including the step it finished."""
    tokens = []
    for record in run:
        tokens.append(record.token_ids[0])
        if record.finished[0]:
            break
    return tokens


def step_tokens(run: Sequence[StepRecord], step: int) -> int:
    """Tokens generated at `step`, all sequences: those that had not finished before it."""
    if step == 0:
        return len(run[0].token_ids)
    return sum(not done for done in run[step - 1].finished)


def tokens_per_s(run: Sequence[StepRecord]) -> float | None:
    """Generated tokens of all sequences / the engine's step times, prefill and warm-up included: what
    the whole run took (None if no time)."""
    return _rate(run, range(len(run)))


def decode_tokens_per_s(run: Sequence[StepRecord]) -> float | None:
    """Tokens generated in warm decode steps, all sequences / those steps' time (None without any).

    A decode step that did one-time work (warmup_s > 0: a graph capture, a kernel compilation) is left
    out whole, its tokens and its time, so the rate is tokens over time of the same steps and is what
    decoding runs at once warm; warmup_s reports the time left out. On a GPU the first decode step of a
    new batch shape captures graphs, so a run with a single decode step may have no rate (None)."""
    return _rate(run, [i for i in range(1, len(run)) if not run[i].warmup_s])


def _rate(run: Sequence[StepRecord], steps) -> float | None:
    """Tokens generated at `steps`, all sequences / those steps' time: the one tokens/s formula."""
    seconds = sum(run[i].step_time_s for i in steps)
    tokens = sum(step_tokens(run, i) for i in steps)
    return tokens / seconds if tokens and seconds > 0 else None


def warmup_s(run: Sequence[StepRecord]) -> float:
    """Seconds of the run's steps that did one-time work (StepRecord.warmup_s), prefill included."""
    return sum(r.warmup_s for r in run)


def agreement(tokens: list[int], reference: list[int] | None) -> float | None:
    """Share of equal tokens over the length both runs reached (None without a reference).

    For runs that may stop at EOS (the comparison table): a run that stopped early is judged on what
    it generated. Evaluation's fixed-length runs use greedy_agreement instead.
    """
    n = min(len(tokens), len(reference)) if reference else 0
    return sum(a == b for a, b in zip(tokens, reference)) / n if n else None


def greedy_agreement(tokens: list[int], reference: list[int]) -> tuple[float, float]:
    """(prefix_fraction, equal_fraction) of `tokens` against `reference`, over len(reference) positions.

    prefix_fraction: positions before the first difference; equal_fraction: equal positions anywhere.
    Positions `tokens` lacks count as different: evaluation asks for a fixed number of tokens.
    """
    if not reference:
        raise ValueError("the reference is empty")
    equal = [i < len(tokens) and tokens[i] == r for i, r in enumerate(reference)]
    prefix = equal.index(False) if False in equal else len(equal)
    return prefix / len(reference), sum(equal) / len(reference)


def first_divergence(tokens: list[int], reference: list[int] | None) -> int | None:
    """The first position where the tokens differ from the reference's, or None."""
    if not reference:
        return None
    return next((i for i, (a, b) in enumerate(zip(tokens, reference)) if a != b), None)


def kv_share(record: StepRecord) -> float:
    """Mean over layers of the slots the first row's cache holds / the tokens it has seen (row_kv_share)."""
    return row_kv_share(record, 0, record.seen_tokens)


def kv_share_reached(run: Sequence[StepRecord], row: int = 0) -> float:
    """A row's KV share averaged over its generation, the prefill and each decode step (generation_kv_share):
    what a KV budget asks for (budget.py)."""
    if not run:
        raise ValueError("the run has no records")
    return generation_kv_share(run, row)


def kv_share_asked(run: Sequence[StepRecord]) -> float | None:
    """The KV share the run's policy was solved for (budget.py), None when no budget was asked."""
    return run[0].policy.get("kv_share_asked") if run else None


def kv_mib(record: StepRecord) -> float:
    """The cache's bytes (K, V and recurrent states, all rows) in MiB."""
    return record.kv_bytes / MIB


def peak_kv_bytes(run: Sequence[StepRecord]) -> int:
    """The most bytes the cache held during the run."""
    return max((r.peak_kv_bytes for r in run), default=0)


def peak_kv_mib(run: Sequence[StepRecord]) -> float:
    return peak_kv_bytes(run) / MIB


def state_nbytes(state) -> int:
    """Bytes of a recurrent state: a tensor, an object that counts its own bytes, or None (0)."""
    if state is None:
        return 0
    if hasattr(state, "element_size"):
        return state.numel() * state.element_size()
    return state.nbytes()


def row_kv_share(record: StepRecord, row: int, seen: int, held_groups: Sequence[float] | None = None) -> float:
    """The share of the full cache a row holds at a step: per layer, kept / seen tokens times the share of
    the layer's KV groups that keep a cache (held_groups[l]; 1 when None), averaged over layers.

    A RecurFormer group keeps a fixed-size state and no tokens, so it holds 0 of its share; the state's
    bytes are in kv_bytes. `seen` is the row's own length: record.seen_tokens is the first row's.
    """
    kept = record.kept_tokens_per_row[row]
    if seen <= 0 or not kept:
        raise ValueError("the record has no tokens")
    if held_groups is None:  # the common case, and a hot one: the studio's panes ask it of every record
        return sum(kept) / (len(kept) * seen)
    if len(held_groups) != len(kept):
        raise ValueError(f"held_groups has {len(held_groups)} layers, the record {len(kept)}")
    return sum(w * k for w, k in zip(held_groups, kept)) / (len(kept) * seen)


def generation_kv_share(run: Sequence[StepRecord], row: int = 0, prompt_tokens: int | None = None,
                        held_groups: Sequence[float] | None = None) -> float:
    """A row's KV share (row_kv_share) averaged over its generation: the prefill and every decode step up
    to the one at which it finished (what follows is padding, not its generation).

    At step i the row has seen prompt_tokens + i tokens; prompt_tokens defaults to the first row's.
    """
    prompt = run[0].seen_tokens if prompt_tokens is None else prompt_tokens
    shares = []
    for i, record in enumerate(run):
        shares.append(row_kv_share(record, row, prompt + i, held_groups))
        if record.finished[row]:
            break
    return sum(shares) / len(shares)


def evictions(run: Sequence[StepRecord], row: int = 0) -> list[list[int]]:
    """Per decode step (run[1:]), the layers whose cache for `row` lost tokens at that step: it holds fewer
    than at the step before plus the one token the step added. A cache that only grows never shows here;
    PyramidInfer's decode compression shows once per chunk and layer, a sliding window at every step."""
    out = []
    for before, now in zip(run, run[1:]):
        pairs = zip(before.kept_tokens_per_row[row], now.kept_tokens_per_row[row])
        out.append([layer for layer, (a, b) in enumerate(pairs) if b < a + 1])
    return out
