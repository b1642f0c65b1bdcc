"""A mode's pane: its text, with the departure from the baseline's text marked, and a line of numbers."""

from __future__ import annotations

import html

from pyramid_core.metrics import kv_mib, kv_share_asked, kv_share_reached, peak_kv_mib
from pyramid_core.trace import RunSummary, StepRecord

SHARE_SLACK = 0.01  # a share reached this far above the one asked still counts as met


def first_difference(text: str, reference: str) -> int | None:
    """Index of the first character where `text` differs from `reference`, within their common length.

    None when one is a prefix of the other: a text that is only longer than the reference so far has
    not (yet) departed from it.
    """
    for i, (a, b) in enumerate(zip(text, reference)):
        if a != b:
            return i
    return None


def pane_html(text: str, baseline: str | None) -> str:
    """The mode's text; from the first character that departs from the baseline's on, highlighted."""
    cut = first_difference(text, baseline) if baseline is not None else None
    if cut is None:
        body = html.escape(text)
    else:
        body = html.escape(text[:cut]) + "<mark title='departs from the baseline here'>" + html.escape(text[cut:]) + "</mark>"
    return f"<div class='pane-text'>{body or '&nbsp;'}</div>"


BLANK_PANE = pane_html("", None)


def kv_shares(run: list[StepRecord]) -> tuple[float | None, float]:
    """(share asked, share reached) of the full KV, as metrics.py defines them: the share the run's
    policy was solved for (None without a budget), and the share held averaged over the run so far."""
    return kv_share_asked(run), kv_share_reached(run)


def pane_stats(run: list[StepRecord], text: str, baseline: str | None, final: bool = False) -> str:
    """Speed (decode tokens/s, RunSummary's, and the warm-up it leaves out), KV bytes and share, tokens;
    then what the user should know: where the text departs from the baseline, a stop, a budget the mode
    could not reach."""
    if not run:
        return "waiting…"
    summary = RunSummary.of(run)
    speed = f"{summary.decode_tokens_per_s:.1f} tokens/s" if summary.decode_tokens_per_s else "–"
    # one-time work (graph capture, kernel compilation) is not in the rate: its time is shown on its own
    warm = f" (warm-up {summary.warmup_s:.2f} s apart)" if summary.warmup_s else ""
    asked, reached = summary.kv_share_asked, summary.kv_share_reached
    share = f"KV share **{reached:.1%}** reached" + (f" ({asked:.1%} asked)" if asked is not None else "")
    line = (f"**{speed}**{warm} · KV **{kv_mib(run[-1]):.2f} MiB** (peak {peak_kv_mib(run):.2f}) · {share} · "
            f"{len(run)} tokens after a {summary.prompt_tokens}-token prompt")
    cut = first_difference(text, baseline) if baseline is not None else None
    notes = [f"departs from the baseline at character {cut}"] if cut is not None else []
    if final and not run[-1].finished[0]:
        notes.append(f"⏹ stopped at token {len(run)}")
    if asked is not None and reached > asked + SHARE_SLACK:
        notes.append(f"⚠ budget out of reach: holds {reached:.0%} where {asked:.0%} was asked")
    return " · ".join([line, *notes])
