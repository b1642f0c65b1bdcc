"""The scriptable comparison: named parameters in, one JSON object out (app.py serves it as /compare).

The page's /generate streams panes and figures; a script wants each mode's text, token ids, KV share
and bytes and speed once the run is done, under names it can read (README, "Scripting the studio").
"""

from __future__ import annotations

from pyramid_core.budget import from_knobs
from pyramid_core.compare import compare
from pyramid_core.engine import Sampling
from pyramid_core.models import EMBEDDED_NAME
from pyramid_core.pipeline import summarize
from pyramid_core.prompting import model_text

from .context import fit_to_context
from .knobs import KNOBS, build_policies
from .model_cache import get_model
from .modes import MODES
from .panes import kv_shares
from .request import flag
from .torch_thread import on_torch_thread

DROPPED = ("prefill_kept_positions",)  # per-layer position lists: large, and not what a script compares


def compare_json(prompt: str, modes: list[str], budget: float = 0.0, max_new_tokens: int = 32,
                 knobs: dict | None = None, model_id: str = EMBEDDED_NAME, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = 0, kv_tokens: int | None = None,
                 chat: bool | None = None) -> dict:
    """Run `modes` on `prompt` side by side and return {"model", "prompt_tokens", "model_prompt",
    "max_new_tokens", "notice", "modes": {mode: {text, token_ids, kv_share_asked, kv_share_reached, kv_bytes,
    peak_kv_bytes, tokens_per_s, decode_tokens_per_s, ...}}}.

    knobs: {mode: {knob: value}}, e.g. {"pyramid": {"recent_ratio": 0.3}}; budget: the KV share (0 = off)
    held over the generation, or kv_tokens a token count, for the modes that take one (pyramid_core/budget.py
    solves each mode's settings for it). chat: the prompt in the model's chat template when it has one
    (None, the default, and True), or raw (False); model_prompt is the text the model read. Bad input
    raises ValueError with a sentence.
    """
    unknown = [m for m in modes or [] if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes must be some of {', '.join(MODES)}; got {modes!r}")
    policies = build_policies([m for m in MODES if m in modes], knob_values(knobs or {}))
    kv_budget = from_knobs(budget or None, int(kv_tokens) if kv_tokens else None)
    chat = flag(chat, "chat")
    lm = get_model(model_id)
    max_new, notice = fit_to_context(lm, prompt, int(max_new_tokens), chat)
    sampling = Sampling(float(temperature), float(top_p), None if seed in (None, "") else int(seed))
    runs = on_torch_thread(collect, compare(lm, prompt, policies, max_new, sampling, False, False, budget=kv_budget,
                                            chat=chat))
    return {"model": lm.name, "prompt_tokens": runs[modes[0]][0].seen_tokens,
            "model_prompt": model_text(lm.tokenizer, prompt, chat), "max_new_tokens": max_new,
            "notice": notice, "modes": {m: mode_json(lm, run) for m, run in runs.items()}}


def knob_values(knobs: dict) -> dict[tuple[str, str], object]:
    """{(mode, knob): value} from {mode: {knob: value}}; an unknown knob raises, naming the known ones."""
    known = {(m, f.name) for m, f in KNOBS}
    values = {(mode, name): v for mode, chosen in knobs.items() for name, v in (chosen or {}).items()}
    if bad := sorted(set(values) - known):
        names = ", ".join(f"{m}.{k}" for m, k in sorted(known))
        raise ValueError(f"unknown knobs {bad}; the knobs are {names}")
    return values


def collect(records) -> dict[str, list]:
    runs: dict[str, list] = {}
    for mode, record in records:
        runs.setdefault(mode, []).append(record)
    return runs


def mode_json(lm, run: list) -> dict:
    asked, reached = kv_shares(run)
    data = {k: v for k, v in summarize(lm, run).items() if k not in DROPPED}
    return {**data, "kv_share_asked": asked, "kv_share_reached": reached}
