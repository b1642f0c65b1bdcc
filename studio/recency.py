"""RecurFormer's recency score of every head, with the heads of the groups an adapter replaces marked."""

from __future__ import annotations

import dataclasses


import visual
from pyramid_core.models import LoadedModel
from pyramid_core.policies.recurformer import DEFAULT_ADAPTER
from pyramid_core.recurformer.adapter import check_adapter, load_adapter
from pyramid_core.recurformer.recency import recency_scores
from pyramid_core.resources import asset

from . import deployment
from .torch_thread import on_torch_thread


WINDOW, SINK_LEN = 32, 4   # recency_scores' defaults: the mass on the last 33 keys, 4 sink tokens apart
MIN_TOKENS = SINK_LEN + 8  # the shortest prompt scored: a window of at least a few tokens must fit


def recency_window(tokens: int) -> int:
    """The window the prompt allows: recency_scores' default, shrunk for a short prompt (its queries
    must see sink_len + window + 1 tokens to vote); ValueError in words for one too short."""
    if tokens < MIN_TOKENS:
        raise ValueError(f"Recency scores need a prompt of at least {MIN_TOKENS} tokens (this one has "
                         f"{tokens}); leave the prompt empty to score the held-out text.")
    return min(WINDOW, tokens - SINK_LEN - 2)


def recency_figure(lm: LoadedModel, prompt: str, adapter: str | None):
    """On the prompt, or the held-out text when it is empty; torch work on the torch thread."""
    deployment.check_adapter(adapter)
    text = prompt if (prompt or "").strip() else asset("heldout.txt").read_text()
    window = recency_window(len(lm.tokenizer(text).input_ids))
    report = on_torch_thread(recency_scores, lm, text, window=window, sink_len=SINK_LEN, max_sequences=1)
    groups, note = replaced_groups(lm, adapter)
    return visual.recency_figure(dataclasses.replace(report, replaced=groups), note=note)


def replaced_groups(lm: LoadedModel, adapter: str | None) -> tuple[list[list[int]], str]:
    """[layer, kv_group] pairs the adapter replaces (the shipped one when none is named), and a note for
    the figure: none marked, and why, when that adapter was made for a model of another shape (said in
    the figure the user is looking at, not in a corner pop-up)."""
    try:
        chosen = load_adapter(adapter or DEFAULT_ADAPTER)
        check_adapter(chosen, lm)
    except ValueError as err:
        return [], f"Replaced heads not marked: {err}"
    return chosen.groups, ""
