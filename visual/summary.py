"""One plain row per mode for the comparison table, and that table as Markdown.

Counting rules: a sequence's token at a step counts as generated when the sequence had not
finished at the previous step (so the EOS token counts, the filler after it does not); the prefill's
sampled token is generated token 0. "Prompt tokens" is the prefill record's seen_tokens.
"""

from __future__ import annotations

from pyramid_core.trace import StepRecord

from .records import as_runs

MIB = 2**20
BASELINE = "baseline"
# (row key, Markdown header); the order is the table's column order
COLUMNS = (
    ("mode", "mode"),
    ("prompt_tokens", "prompt tokens"),
    ("generated_tokens", "generated tokens"),
    ("final_kv_mib", "final KV (MiB)"),
    ("peak_kv_mib", "peak KV (MiB)"),
    ("kv_pct_of_baseline", "KV % of baseline"),
    ("tokens_per_s", "decode tokens/s"),
    ("prefill_s", "prefill (s)"),
    ("agreement", "agreement with baseline"),
    ("first_divergence", "first divergence"),
)
MISSING = "–"


def summary_rows(runs: dict[str, list[StepRecord]], baseline: str = BASELINE) -> list[dict]:
    """One dict per mode with the COLUMNS keys; baseline comparisons are None when `baseline` has no run.

    kv_pct_of_baseline compares final kv_bytes. tokens_per_s = decode tokens of all sequences /
    sum of decode step times (None without decode steps). agreement is the fraction of the first
    sequence's generated positions, over the length both runs reached, whose token equals the
    baseline's; first_divergence is the first such position that differs, or None.
    """
    runs = as_runs(runs)
    base = runs.get(baseline)
    return [_row(mode, run, base) for mode, run in runs.items()]


def summary_table_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table in COLUMNS order; None shows as MISSING."""
    lines = ["| " + " | ".join(header for _, header in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in rows:
        if set(row) != {key for key, _ in COLUMNS}:
            raise ValueError(f"summary row keys must be {[k for k, _ in COLUMNS]}, got {sorted(row)}")
        lines.append("| " + " | ".join(_cell(key, row[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def first_sequence_tokens(run: list[StepRecord]) -> list[int]:
    """The first sequence's generated token ids, up to and including the step it finished."""
    tokens = []
    for record in run:
        tokens.append(record.token_ids[0])
        if record.finished[0]:
            break
    return tokens


def decode_tokens_per_s(run: list[StepRecord]) -> float | None:
    """Tokens sampled by still-running sequences in decode steps / total decode step time."""
    decoded = sum(sum(not done for done in prev.finished) for prev in run[:-1])
    seconds = sum(r.step_time_s for r in run[1:])
    return decoded / seconds if decoded and seconds > 0 else None


def _row(mode: str, run: list[StepRecord], base: list[StepRecord] | None) -> dict:
    tokens = first_sequence_tokens(run)
    base_tokens = first_sequence_tokens(base) if base else None
    base_kv = base[-1].kv_bytes if base else 0
    return {
        "mode": mode,
        "prompt_tokens": run[0].seen_tokens,
        "generated_tokens": len(tokens),
        "final_kv_mib": run[-1].kv_bytes / MIB,
        "peak_kv_mib": max(r.peak_kv_bytes for r in run) / MIB,
        "kv_pct_of_baseline": 100 * run[-1].kv_bytes / base_kv if base_kv else None,
        "tokens_per_s": decode_tokens_per_s(run),
        "prefill_s": run[0].step_time_s,
        "agreement": _agreement(tokens, base_tokens),
        "first_divergence": _first_divergence(tokens, base_tokens),
    }


def _agreement(tokens: list[int], base: list[int] | None) -> float | None:
    n = min(len(tokens), len(base)) if base else 0
    return sum(a == b for a, b in zip(tokens, base)) / n if n else None


def _first_divergence(tokens: list[int], base: list[int] | None) -> int | None:
    if not base:
        return None
    return next((i for i, (a, b) in enumerate(zip(tokens, base)) if a != b), None)


def _cell(key: str, value) -> str:
    if value is None:
        return MISSING
    if key == "agreement":
        return f"{100 * value:.1f}%"
    if key == "kv_pct_of_baseline":
        return f"{value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3f}" if key == "prefill_s" else f"{value:.2f}"
    return str(value)
