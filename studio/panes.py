"""A mode's pane: its text, with the departure from the baseline's text marked, and a line of numbers."""

from __future__ import annotations

import html

from pyramid_core.compare import live_stats
from pyramid_core.trace import StepRecord


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


def pane_stats(run: list[StepRecord], text: str, baseline: str | None) -> str:
    if not run:
        return "waiting…"
    s = live_stats(run)
    speed = f"{s['tokens_per_s']:.1f} tokens/s" if s["tokens_per_s"] else "–"
    asked = f"{s['kv_share_asked']:.1%} asked, " if s["kv_share_asked"] is not None else ""
    line = (f"**{speed}** · KV **{s['kv_mib']:.2f} MiB** (peak {s['peak_kv_mib']:.2f}) · "
            f"KV share {asked}**{s['kv_share_reached']:.1%}** reached · "
            f"{s['tokens']} tokens after a {s['prompt_tokens']}-token prompt")
    cut = first_difference(text, baseline) if baseline is not None else None
    return line + (f" · departs from the baseline at character {cut}" if cut is not None else "")
