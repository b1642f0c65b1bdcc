"""One plain row per mode for the comparison table, and that table as Markdown.

Every figure is pyramid_core.metrics' (its counting rules are there), read through trace.RunSummary. "Prompt tokens" is the prefill
record's seen_tokens.
"""

from __future__ import annotations

from pyramid_core.trace import MIB, RunSummary, StepRecord

from .records import as_runs

BASELINE = "baseline"
# (row key, Markdown header); the order is the table's column order
COLUMNS = (
    ("mode", "mode"),
    ("prompt_tokens", "prompt tokens"),
    ("generated_tokens", "generated tokens"),
    ("final_kv_mib", "final KV (MiB)"),
    ("peak_kv_mib", "peak KV (MiB)"),
    ("kv_pct_of_baseline", "KV % of baseline"),
    ("kv_share_asked", "KV share asked"),
    ("kv_share_reached", "KV share reached"),
    ("tokens_per_s", "decode tokens/s"),
    ("prefill_s", "prefill (s)"),
    ("warmup_s", "warm-up (s)"),
    ("agreement", "agreement with baseline"),
    ("first_divergence", "first divergence"),
)
MISSING = "–"


def summary_rows(runs: dict[str, list[StepRecord]], baseline: str = BASELINE) -> list[dict]:
    """One dict per mode with the COLUMNS keys; baseline comparisons are None when `baseline` has no run.

    kv_pct_of_baseline compares final kv_bytes. kv_share_asked is the KV budget's share (None without
    one) and kv_share_reached the share of the full cache's tokens held, averaged over the run.
    tokens_per_s = decode tokens of all sequences / sum of decode step times, over the steps that did no
    one-time work (None without any); warmup_s is the time of the steps that did (graph capture, kernel
    compilation: RunSummary). agreement is the fraction of the first sequence's generated positions,
    over the length both runs reached, whose token equals the baseline's; first_divergence is the first
    such position that differs, or None.
    """
    summaries = {mode: RunSummary.of(run) for mode, run in as_runs(runs).items()}  # each run once
    base = summaries.get(baseline)
    return [_row(mode, summary, base) for mode, summary in summaries.items()]


def summary_table_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table in COLUMNS order; None shows as MISSING."""
    lines = ["| " + " | ".join(header for _, header in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in rows:
        if set(row) != {key for key, _ in COLUMNS}:
            raise ValueError(f"summary row keys must be {[k for k, _ in COLUMNS]}, got {sorted(row)}")
        lines.append("| " + " | ".join(_cell(key, row[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def _row(mode: str, mine: RunSummary, theirs: RunSummary | None) -> dict:
    base_kv = theirs.final_kv_bytes if theirs else 0
    return {
        "mode": mode,
        "prompt_tokens": mine.prompt_tokens,
        "generated_tokens": len(mine.tokens),
        "final_kv_mib": mine.final_kv_bytes / MIB,
        "peak_kv_mib": mine.peak_kv_bytes / MIB,
        "kv_pct_of_baseline": 100 * mine.final_kv_bytes / base_kv if base_kv else None,
        "kv_share_asked": mine.kv_share_asked,
        "kv_share_reached": mine.kv_share_reached,
        "tokens_per_s": mine.decode_tokens_per_s,
        "prefill_s": mine.prefill_s,
        "warmup_s": mine.warmup_s,
        "agreement": mine.agreement(theirs),
        "first_divergence": mine.first_divergence(theirs),
    }


def _cell(key: str, value) -> str:
    if value is None:
        return MISSING
    if key == "agreement":
        return f"{100 * value:.1f}%"
    if key == "kv_pct_of_baseline":
        return f"{value:.1f}%"
    if key in ("kv_share_asked", "kv_share_reached"):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3f}" if key == "prefill_s" else f"{value:.2f}"
    return str(value)
