"""One run of the studio as a typed request, read by name from the generate form's values.

Gradio hands a handler its inputs in order. The form's order is written once, here (FORM, every knob
of KNOBS, then LATER), app.py builds its input list from form_names(), and the handler's signature carries
the same names, so the API's parameters are named (model_id, ..., pyramid__recent_ratio) and nothing
is matched by position anywhere else.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import gradio as gr

from pyramid_core.budget import Budget, from_knobs
from pyramid_core.engine import Sampling
from pyramid_core.policies.base import Policy

from . import deployment
from .knobs import KNOBS, build_policies
from .modes import MODES

MAX_NEW_TOKENS = 1024  # the page's slider's end
FORM = ("model_id", "modes", "budget", "kv_tokens", "temperature", "top_p", "seed", "max_new_tokens", "prompt",
        "attn_mode", "attn_step", "layer", "head")
# fields added after the knobs, so that callers who pass the form by position keep working
LATER = ("chat",)


def knob_name(mode: str, knob: str) -> str:
    """The form's (and the API's) name of one mode's knob: an identifier, e.g. pyramid_recurformer__adapter."""
    return f"{mode.replace('+', '_')}__{knob}"


def form_names() -> list[str]:
    return [*FORM, *(knob_name(mode, f.name) for mode, f in KNOBS), *LATER]


def with_form_signature(handler):
    """handler(request, *values) as Gradio sees it: a gr.Request, then one named parameter per form field."""
    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)]
    params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in form_names()]
    handler.__signature__ = inspect.Signature(params)
    return handler


@dataclass(frozen=True)
class RunRequest:
    """What one comparison runs, checked: at least one mode, a prompt, policies whose knobs are in
    range, valid sampling. Raises ValueError (a sentence for the user) otherwise."""

    model_id: str
    modes: tuple[str, ...]
    prompt: str
    max_new_tokens: int
    policies: dict[str, Policy] = field(compare=False)
    sampling: Sampling
    budget: Budget | None  # solved per prompt for every mode that takes one (0 or empty: off)
    view: dict = field(compare=False)  # the attention view: mode, step, layer, head
    chat: bool = True  # the prompt in the model's chat template, when it has one (prompting.py)

    @classmethod
    def from_form(cls, values) -> RunRequest:
        form = dict(zip(form_names(), values, strict=True))
        chosen = form["modes"] if isinstance(form["modes"], (list, tuple)) else []
        modes = tuple(m for m in MODES if m in chosen)
        if not modes:
            raise ValueError("Select at least one mode (" + ", ".join(MODES) + ").")
        if not isinstance(form["prompt"], (str, type(None))):
            raise ValueError(f"The prompt must be text, got {type(form['prompt']).__name__}.")
        if not (form["prompt"] or "").strip():
            raise ValueError("The prompt is empty: type one or pick a sample prompt.")
        knobs = {(mode, f.name): form[knob_name(mode, f.name)] for mode, f in KNOBS}
        for (mode, name), value in knobs.items():
            if name == "adapter":  # a directory on the server: refused on a public deployment
                deployment.check_adapter(value)
        seed = form["seed"]
        return cls(model_id=form["model_id"], modes=modes, prompt=form["prompt"],
                   max_new_tokens=number(form, "max_new_tokens", int, 1, MAX_NEW_TOKENS),
                   policies=build_policies(list(modes), knobs),
                   budget=from_knobs(number(form, "budget", float, 0, 1) or None,
                                     number(form, "kv_tokens", int, 1, 10**9) if form["kv_tokens"] else None),
                   sampling=Sampling(number(form, "temperature", float, 0, 10), number(form, "top_p", float, 0, 1),
                                     None if seed in (None, "") else number(form, "seed", int, 0, 2**63 - 1)),
                   view={"mode": form["attn_mode"], "step": form["attn_step"],
                         "layer": number(form, "layer", int, 0, 10**6) if form["layer"] is not None else 0,
                         "head": form["head"]},
                   chat=flag(form["chat"], "chat"))


def flag(value, name: str, default: bool = True) -> bool:
    """A checkbox's value as a bool (None: the default); ValueError for anything but a bool."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r:.40}.")
    return value


def number(form: dict, name: str, kind: type, low, high):
    """form[name] as a finite int or float within [low, high]; ValueError (one sentence) otherwise. The
    page's widgets keep to their bounds; an API caller can send anything."""
    value = form[name]
    try:
        if isinstance(value, bool) or not math.isfinite(float(value)):
            raise ValueError
        got = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a finite number, got {value!r:.40}.") from None
    if not low <= got <= high:
        raise ValueError(f"{name} must be from {low} to {high}, got {got}.")
    return got
