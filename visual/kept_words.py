"""Which words each mode kept: the text itself, token by token, shaded by how much of a mode's cache still
holds each token, with the attention the newest token pays to it on hover.

HTML, not a figure: the point is to read the prompt's own words (a needle kept by one mode and dropped by
another), which a heatmap of positions cannot show. Pure: records and token strings in, a string out.
"""

from __future__ import annotations

import html

from pyramid_core.trace import StepRecord

from .pyramid import latest_with_positions
from .records import as_run
from .theme import mode_color

DROPPED_COLOR = "#9aa0a6"  # text of a token no layer holds
NO_RUN = "{mode} was not run: select it in Modes and generate."
KEY = ("<div class='kept-key'>shade = share of layers that still hold the token "
       "(one layer: held or not) · <span style='color:{dropped};text-decoration:line-through'>grey, struck"
       "</span> = dropped by every layer shown · hover a token for the attention the newest token pays it</div>")


def held_share(record: StepRecord, layer: int | None) -> dict[int, float]:
    """position -> share of layers holding it (layer None), or 1.0 for the positions `layer` holds."""
    kept = record.kept_positions
    if layer is not None:
        if not 0 <= layer < len(kept):
            raise ValueError(f"layer must be in [0, {len(kept)}), got {layer!r}")
        return {p: 1.0 for p in kept[layer]}
    counts: dict[int, int] = {}
    for positions in kept:
        for p in positions:
            counts[p] = counts.get(p, 0) + 1
    return {p: n / len(kept) for p, n in counts.items()}


def newest_attention(record: StepRecord, layer: int | None) -> dict[int, float]:
    """position -> the newest token's attention on it, mean over heads; for layer None the mean over the
    recorded layers (0 where a layer does not hold it). Empty when the record carries no attention."""
    layers = [a for a in record.attention or [] if layer is None or a.layer == layer]
    total: dict[int, float] = {}
    for la in layers:
        for j, p in enumerate(la.positions):
            total[p] = total.get(p, 0.0) + sum(head[j] for head in la.weights) / len(la.weights)
    return {p: w / len(layers) for p, w in total.items()}


def kept_words_html(mode: str, run: list[StepRecord], tokens: list[str], layer: int | None = None) -> str:
    """One mode's panel: its last record with kept positions, over tokens[p] for p < the tokens it has seen.

    tokens: the text of every position (the prompt's tokens, then the mode's generated ones).
    """
    if not run:
        return f"<div class='kept-panel'><p>{html.escape(NO_RUN.format(mode=mode))}</p></div>"
    record = latest_with_positions(mode, as_run(mode, run))
    share = held_share(record, layer)
    weight = newest_attention(record, layer)
    shown = tokens[:record.seen_tokens]
    held = sum(1 for p in range(len(shown)) if share.get(p, 0) > 0)
    where = "every layer" if layer is None else f"layer {layer}"
    head = (f"<div class='kept-head' style='border-color:{mode_color(mode)}'><b>{html.escape(mode)}</b> at step "
            f"{record.step}, {where}: holds {held} of {len(shown)} tokens</div>")
    layers = len(record.kept_positions)
    spans = "".join(_token_span(p, t, share.get(p, 0.0), weight.get(p), mode_color(mode),
                                _held_note(share.get(p, 0.0), layer, layers))
                    for p, t in enumerate(shown))
    return f"<div class='kept-panel'>{head}<div class='kept-text'>{spans}</div></div>"


def kept_words_pair(runs: dict[str, list[StepRecord]], tokens: dict[str, list[str]], modes: list[str],
                    layer: int | None = None) -> str:
    """Panels of the chosen modes side by side (e.g. PyramidInfer next to streaming), under one key."""
    panels = "".join(kept_words_html(m, runs.get(m) or [], tokens.get(m) or [], layer) for m in modes)
    return KEY.format(dropped=DROPPED_COLOR) + f"<div class='kept-pair'>{panels}</div>"


def _held_note(share: float, layer: int | None, layers: int) -> str:
    if layer is not None:
        return f"{'held' if share else 'dropped'} in layer {layer}"
    return f"held by {round(share * layers)} of {layers} layers"


def _token_span(p: int, text: str, share: float, weight: float | None, color: str, note: str) -> str:
    tip = f"position {p} · {note}"
    if weight is not None:
        tip += f" · attention of the newest token {weight:.4f}"
    if share == 0:
        style = f"color:{DROPPED_COLOR};text-decoration:line-through"
    else:  # the mode's colour, as opaque as the share of layers that hold the token
        style = f"background:{_rgba(color, 0.15 + 0.6 * share)}"
    return f"<span title='{html.escape(tip)}' style='{style}'>{html.escape(text)}</span>"


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.2f})"
