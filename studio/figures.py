"""The figures and the summary table of a run, from its records (visual/ draws each figure), and the
attention view's choices."""

from __future__ import annotations

import visual
from pyramid_core.models import LoadedModel
from pyramid_core.trace import StepRecord

from .kept_words import token_texts

MEAN_HEAD = "mean over heads"
STEP_CHOICES = ("latest step", "prefill")


def head_choices(config) -> list[str]:
    return [MEAN_HEAD] + [f"head {h}" for h in range(config.num_attention_heads)]


def run_figures(runs, view: dict) -> list:
    """KV memory, pyramid, attention (all layers, and the chosen layer), summary table."""
    runs = {m: r for m, r in runs.items() if r}
    grid, bars = attention_figures(runs, view)
    return [visual.kv_memory_figure(runs), visual.pyramid_figure(runs), grid, bars, summary_table(runs)]


def attention_figures(runs, view: dict):
    run = runs.get(view["mode"]) or []
    if not run:
        message = "No run of this mode yet: generate to see its attention."
        return visual.empty_figure(message), visual.empty_figure(message)
    record = run[0] if view["step"] == "prefill" else latest_with_attention(run)
    head = None if view["head"] in (None, MEAN_HEAD) else int(str(view["head"]).split()[-1])
    layer = int(view["layer"] or 0)
    if record.attention and layer >= len(record.attention):
        layer = len(record.attention) - 1
    return visual.attention_grid_figure(record, head), visual.attention_figure(record, layer, head)


def latest_with_attention(run: list[StepRecord]) -> StepRecord:
    """The newest record that carries attention (the live view records it only on the steps it draws)."""
    return next((r for r in reversed(run) if r.attention is not None), run[-1])


def summary_table(runs) -> list[list]:
    rows = visual.summary_rows(runs)
    return [[round(v, 3) if isinstance(v, float) else v for v in (row[k] for k, _ in visual.COLUMNS)]
            for row in rows]


def run_state(lm: LoadedModel, runs, prompt: str | None = None, chat: bool = False) -> dict:
    """What gr.State keeps of a finished run: plain dicts, for redrawing and export, and the text of
    every position for the kept-words view (when the prompt is given; chat: as the template wraps it)."""
    runs = {m: run for m, run in runs.items() if run}
    state = {"model": lm.name, "runs": {m: [r.to_dict() for r in run] for m, run in runs.items()}}
    if prompt is not None:
        state["tokens"] = token_texts(lm, prompt, runs, chat)
    return state
