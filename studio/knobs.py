"""The policies' knobs as widgets: read from each mode's dataclass fields (their defaults and help
text), so that a knob added to a policy appears in the studio without a change here."""

from __future__ import annotations

import dataclasses

import gradio as gr

from pyramid_core.policies import ALL_POLICIES
from pyramid_core.policies.pyramid import PRESETS
from pyramid_core.policies.registry import make_policy

from .modes import MODES

BUDGET_KNOB = "kv_budget"  # the request's budget slider (budget.py) sets it, not a knob per mode
NO_PRESET = "(none)"


def knob_fields() -> list[tuple[str, dataclasses.Field]]:
    """(mode, field) for every user knob of every mode, in declaration order."""
    return [(mode, f) for mode in MODES if dataclasses.is_dataclass(ALL_POLICIES[mode])
            for f in dataclasses.fields(ALL_POLICIES[mode]) if f.init and f.name != BUDGET_KNOB]


KNOBS = knob_fields()


def knob_component(f: dataclasses.Field) -> gr.components.Component:
    """A widget for one dataclass knob: its default, and its help as the info text."""
    help_text = (f.metadata or {}).get("help")
    if isinstance(f.default, str) and help_text and " | " in help_text:
        return gr.Dropdown(help_text.split(" | "), value=f.default, label=f.name, info=help_text)
    if isinstance(f.default, str):
        return gr.Textbox(value=f.default, label=f.name, info=help_text)
    precision = 0 if isinstance(f.default, int) and not isinstance(f.default, bool) else None
    return gr.Number(value=f.default, label=f.name, info=help_text, precision=precision)


def build_policies(modes: list[str], knobs: dict[tuple[str, str], object]) -> dict:
    """{mode: policy} from knobs {(mode, knob): value} (None or absent: the default); a knob out of range
    raises ValueError naming the mode and the knob. The KV budget is the request's (request.py)."""
    fields = dict(((m, f.name), f) for m, f in KNOBS)
    policies = {}
    for mode in modes:
        chosen = {name: _knob_value(fields[m, name], v) for (m, name), v in knobs.items()
                  if m == mode and v is not None}
        try:
            policies[mode] = make_policy(mode, chosen)
        except (TypeError, ValueError) as err:  # TypeError: a knob of the wrong type from the API
            raise ValueError(f"{mode}: {err}") from err
    return policies


def _knob_value(f: dataclasses.Field, value):
    """A number widget gives floats: an int knob gets its int back."""
    if isinstance(f.default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def preset_values(preset: str) -> list:
    """Knob widget values for a pyramid preset (other modes' knobs unchanged), then the budget slider."""
    chosen = PRESETS.get(preset, {})
    values = [chosen.get(f.name, f.default) if mode == "pyramid" else gr.skip() for mode, f in KNOBS]
    return values + [chosen.get(BUDGET_KNOB, 0.0)]
