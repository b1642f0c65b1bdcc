"""The trace records' field checks: trace.py's dataclasses run them once, when a record is made.

Records reach views from the engine and from JSON (an exported trace, a client); either way a record
that breaks the contract raises ValueError naming the field, so no figure is drawn from a bad one.
Records the engine makes are checked in shape (lengths, steps, bytes): their values come from tensors.
Records read from dicts (JSON, clients) are checked deeply too: every value's type and range, duplicate
positions, finite weights; that costs ~25 ms for 32 layers x 8k kept positions, too much for every
prefill the engine records.
"""

from __future__ import annotations

import math

PHASES = ("prefill", "decode")
SCORE_TOLERANCE = 1e-6  # recency scores are means of bf16 weights and may overshoot 1 by rounding


def _check_int(name: str, value, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_number(name: str, value, minimum: float = 0.0, maximum: float = math.inf) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a finite number in [{minimum}, {maximum}], got {value!r}")


def _check_list(name: str, value, length: int | None = None) -> None:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(value)}")


def _check_ints(name: str, values, length: int | None = None) -> None:
    """Ints >= 0; written as whole-list checks because kept_positions can hold L x T entries per step."""
    _check_list(name, values, length)
    if not set(map(type, values)) <= {int} or (values and min(values) < 0):
        raise ValueError(f"{name} must hold ints >= 0, got {list(values)[:8]!r}...")


def _check_weights(name: str, values) -> None:
    """Finite numbers >= 0 (a NaN or inf makes the sum non-finite: weights are at most 1)."""
    if not set(map(type, values)) <= {int, float} or (values and min(values) < 0):
        raise ValueError(f"{name} must hold numbers >= 0, got {list(values)[:8]!r}...")
    if not math.isfinite(sum(values)):
        raise ValueError(f"{name} holds a NaN or infinite weight")


def check_step_record(r, deep: bool = False) -> None:
    """A StepRecord's fields against the contract in trace.py; ValueError naming the first bad one.
    deep: also every value in the long lists (kept positions, attention weights)."""
    _check_int("step", r.step)
    where = f"step {r.step}"
    if r.phase not in PHASES:
        raise ValueError(f"{where}: phase must be one of {PHASES}, got {r.phase!r}")
    if (r.step == 0) != (r.phase == "prefill"):
        raise ValueError(f"{where}: step 0 and only step 0 is the prefill, got phase {r.phase!r}")
    _check_ints(f"{where}: token_ids", r.token_ids)
    batch, layers = len(r.token_ids), len(r.kept_tokens)
    if batch == 0:
        raise ValueError(f"{where}: token_ids is empty")
    _check_list(f"{where}: finished", r.finished, batch)
    if not all(isinstance(f, bool) for f in r.finished):
        raise ValueError(f"{where}: finished must hold bools, got {r.finished!r}")
    _check_ints(f"{where}: kept_tokens", r.kept_tokens)
    _check_list(f"{where}: kept_tokens_per_row", r.kept_tokens_per_row, batch)
    for b, row in enumerate(r.kept_tokens_per_row):
        _check_ints(f"{where}: kept_tokens_per_row[{b}]", row, layers)
    if list(r.kept_tokens_per_row[0]) != list(r.kept_tokens):
        raise ValueError(f"{where}: kept_tokens_per_row[0] must equal kept_tokens (both the first sequence)")
    _check_int(f"{where}: kv_bytes", r.kv_bytes)
    _check_int(f"{where}: peak_kv_bytes", r.peak_kv_bytes, minimum=r.kv_bytes)
    _check_number(f"{where}: step_time_s", r.step_time_s)
    _check_number(f"{where}: warmup_s", r.warmup_s, maximum=r.step_time_s)  # a part of the step's time
    _check_int(f"{where}: seen_tokens", r.seen_tokens)
    if not isinstance(r.policy, dict):
        raise ValueError(f"{where}: policy must be a dict, got {type(r.policy).__name__}")
    if r.kept_positions is not None:
        _check_kept_positions(where, r.kept_positions, r.kept_tokens, deep)
    if r.attention is not None:
        _check_attention(where, r.attention, layers, deep)


def _check_kept_positions(where: str, kept_positions, kept_tokens, deep: bool) -> None:
    _check_list(f"{where}: kept_positions", kept_positions, len(kept_tokens))
    for layer, positions in enumerate(kept_positions):
        name = f"{where}: kept_positions[{layer}]"
        if not deep:
            _check_list(name, positions, kept_tokens[layer])
            continue
        _check_ints(name, positions, kept_tokens[layer])
        if len(set(positions)) != len(positions):
            raise ValueError(f"{name} holds a position twice")


def _check_attention(where: str, attention, layers: int, deep: bool) -> None:
    _check_list(f"{where}: attention", attention)
    seen = set()
    for a in attention:
        name = f"{where}: attention of layer {a.layer}"
        _check_int(name, a.layer)
        if a.layer >= layers or a.layer in seen:
            raise ValueError(f"{name}: layer must be unique and below {layers}")
        seen.add(a.layer)
        (_check_ints if deep else _check_list)(f"{name}: positions", a.positions)
        _check_int(f"{name}: num_queries", a.num_queries, minimum=1)
        _check_list(f"{name}: weights", a.weights)
        if len(a.weights) == 0:
            raise ValueError(f"{name}: weights has no heads")
        for h, row in enumerate(a.weights):
            _check_list(f"{name}: weights[{h}]", row, len(a.positions))
            if deep:
                _check_weights(f"{name}: weights[{h}]", row)


def check_recency_report(r) -> None:
    """A RecencyReport's fields against the contract in trace.py; ValueError naming the first bad one."""
    _check_int("window", r.window)
    _check_int("sink_len", r.sink_len)
    _check_int("heads_per_group", r.heads_per_group, minimum=1)
    _check_list("scores", r.scores)
    _check_list("sink_mass", r.sink_mass, len(r.scores))
    heads = len(r.scores[0]) if r.scores else 0
    if heads % r.heads_per_group:
        raise ValueError(f"{heads} query heads do not split into groups of {r.heads_per_group}")
    for name, table in (("scores", r.scores), ("sink_mass", r.sink_mass)):
        for layer, row in enumerate(table):
            _check_list(f"{name}[{layer}]", row, heads)
            for s in row:
                _check_number(f"{name}[{layer}]", s, maximum=1.0 + SCORE_TOLERANCE)
    _check_list("replaced", r.replaced)
    for pair in r.replaced:
        _check_ints("replaced pair", pair, 2)
        if pair[0] >= len(r.scores) or pair[1] >= heads // r.heads_per_group:
            raise ValueError(f"replaced pair {pair} is outside {len(r.scores)} layers x "
                             f"{heads // r.heads_per_group} KV groups")
