"""The studio's helpers (studio/) as plain functions: knobs, the run's request, live state and refresh
schedule, panes and the slimming of stored records. Tiny random models: structure and timing, not words."""

from __future__ import annotations

import dataclasses
import inspect
import time

import gradio as gr
import pytest

from pyramid_core.budget import Budget
from pyramid_core.engine import Sampling
from pyramid_core.policies import ALL_POLICIES, FullPolicy
from pyramid_core.policies.pyramid import PRESETS
from studio.figures import MEAN_HEAD, STEP_CHOICES
from studio.knobs import BUDGET_KNOB, KNOBS, NO_PRESET, build_policies, knob_component, preset_values
from studio.live import PLOTS_EVERY_S, PLOTS_SHARE, TEXT_EVERY_S, TEXT_MAX_S, TEXT_SHARE, Live, slim
from studio.model_cache import get_model
from studio.modes import MODES
from studio.panes import first_difference, pane_html
from studio.request import FORM, LATER, RunRequest, form_names, knob_name, with_form_signature
from tests.test_compare import lm, lone  # noqa: F401 (lm is a fixture)


def form(**overrides) -> list:
    """The generate form's values in form_names() order: the app's defaults, knobs None (the default)."""
    values = dict(model_id="embedded", modes=["baseline", "pyramid"], budget=0.0, kv_tokens=0, temperature=0.0, top_p=1.0,
                  seed=0, max_new_tokens=8, prompt="the cat sat", attn_mode="baseline", attn_step=STEP_CHOICES[0],
                  layer=0, head=MEAN_HEAD, chat=True)
    knobs = overrides.pop("knobs", {})
    values.update(overrides)
    return [*(values[name] for name in FORM), *(knobs.get((m, f.name)) for m, f in KNOBS),
            *(values[name] for name in LATER)]


def test_run_request_reads_the_form_by_name():
    run = RunRequest.from_form(form(modes=["pyramid", "nonsense", "baseline"], budget=0.4, temperature=0.7,
                                    seed="", knobs={("pyramid", "sink_len"): 8.0}))
    assert run.modes == ("baseline", "pyramid")  # pane order; unknown modes left out
    assert run.policies["pyramid"].sink_len == 8 and run.budget == Budget(share=0.4)
    assert run.sampling == Sampling(0.7, 1.0, None) and run.max_new_tokens == 8
    assert run.view == {"mode": "baseline", "step": STEP_CHOICES[0], "layer": 0, "head": MEAN_HEAD}


@pytest.mark.parametrize("overrides, message", [
    (dict(modes=[]), "Select at least one mode"),
    (dict(prompt="  "), "prompt is empty"),
    (dict(knobs={("pyramid", "recent_ratio"): 2.0}), r"pyramid: recent_ratio must be in \[0, 1\]"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(budget=0.3, kv_tokens=64), "either kv_budget"),
])
def test_run_request_refuses_bad_input_with_a_sentence(overrides, message):
    with pytest.raises(ValueError, match=message):
        RunRequest.from_form(form(**overrides))
    with pytest.raises(ValueError):  # one value too few: the form and its names disagree
        RunRequest.from_form(form()[:-1])


def test_the_handler_signature_names_every_form_field():
    """Gradio names the API's parameters after the handler's: every field and knob by name, no param_N."""
    names = list(inspect.signature(with_form_signature(lambda request, *values: None)).parameters)
    assert names == ["request", *form_names()]
    assert knob_name("pyramid+recurformer", "adapter") in names and "pyramid__recent_ratio" in names
    assert all(name.isidentifier() for name in names)


def test_first_difference():
    assert first_difference("the cat sat", "the cat sat") is None
    assert first_difference("the cat", "the cat sat") is None  # a prefix has not departed yet
    assert first_difference("the dog", "the cat") == 4
    assert first_difference("", "abc") is None


def test_slim(lm):
    run = lone(lm, FullPolicy(), 4, Sampling())
    growing = []
    for record in run:
        growing.append(record)
        slim(growing)
    assert growing[0].attention is not None and growing[-1].attention is not None  # prefill and latest
    assert all(r.attention is None and r.kept_positions is None for r in growing[1:-1])
    assert [r.token_ids for r in growing] == [r.token_ids for r in run]


def test_knob_widgets_mirror_the_dataclasses():
    for mode in MODES:
        cls = ALL_POLICIES[mode]
        expected = [f.name for f in dataclasses.fields(cls) if f.init and f.name != BUDGET_KNOB]
        assert [f.name for m, f in KNOBS if m == mode] == expected
    with gr.Blocks():
        widgets = {f.name: knob_component(f) for m, f in KNOBS if m == "pyramid"}
    assert isinstance(widgets["prefill_decay_strategy"], gr.Dropdown)
    assert widgets["recent_ratio"].value == 0.2 and widgets["recent_ratio"].info.startswith("recent window")
    assert widgets["sink_len"].precision == 0


def test_build_policies_applies_knobs():
    policies = build_policies(["baseline", "pyramid", "streaming"], {("pyramid", "sink_len"): 8.0})
    assert policies["pyramid"].sink_len == 8 and isinstance(policies["pyramid"].sink_len, int)
    off = build_policies(["pyramid", "streaming"], {(m, f.name): None for m, f in KNOBS})
    assert off["streaming"].kv_budget == 0.5  # the dataclass default: the budget slider is the request's
    with pytest.raises(ValueError, match="pyramid: chunk_length"):
        build_policies(["pyramid"], {("pyramid", "chunk_length"): 0})


def test_the_kv_tokens_box_asks_for_tokens():
    assert RunRequest.from_form(form(kv_tokens=64.0)).budget == Budget(tokens=64)
    assert RunRequest.from_form(form()).budget is None


def test_preset_fills_the_pyramid_knobs():
    values = preset_values("table1-45")
    pyramid = {f.name: v for (m, f), v in zip(KNOBS, values) if m == "pyramid"}
    assert pyramid["recent_ratio"] == PRESETS["table1-45"]["recent_ratio"]
    assert pyramid["sink_len"] == 4  # not in the preset: the dataclass default
    assert values[-1] == PRESETS["table1-45"]["kv_budget"]
    assert preset_values(NO_PRESET)[-1] == 0.0


def test_updates_slow_down_when_sending_them_is_costly(checkpoint):
    live = Live(get_model(checkpoint), ["baseline"], {"mode": "baseline", "step": STEP_CHOICES[0],
                                                              "layer": 0, "head": MEAN_HEAD})
    live.sent(0.001)  # cheap: the floor
    assert live.text_gap == TEXT_EVERY_S
    live.sent(0.017)  # running mean 0.009 s an update: refresh rarely enough that it is TEXT_SHARE of the time
    assert live.text_gap == pytest.approx(0.009 / TEXT_SHARE)
    live.sent(0.5)  # costly: the text still comes every TEXT_MAX_S
    assert live.text_gap == TEXT_MAX_S
    live.plotted = True  # an update with figures sets how often figures come, not panes
    live.sent(0.001)
    assert live.plots_gap == PLOTS_EVERY_S
    live.sent(1.0)
    assert live.plots_gap == pytest.approx(1.0 / PLOTS_SHARE)
    assert live.text_gap == TEXT_MAX_S


def test_pane_marks_the_departure_and_escapes():
    assert "<mark" not in pane_html("the <cat>", "the <cat> sat")
    marked = pane_html("the dog <b>", "the cat")
    assert "the <mark" in marked and "dog &lt;b&gt;</mark>" in marked


def test_live_view_records_detail_once_per_mode_per_figure_refresh(checkpoint):
    """Attention and positions cost time: the live view asks for them at the prefill and then at one
    step of each mode between two figure refreshes (the same answer for both questions of a step)."""
    view = {"mode": "baseline", "step": STEP_CHOICES[0], "layer": 0, "head": MEAN_HEAD}
    live = Live(get_model(str(checkpoint)), ["baseline", "pyramid"], view)
    live.plots_at = time.monotonic()  # figures just drawn
    assert live.wants_detail("baseline", 0)
    assert not live.wants_detail("baseline", 1)
    live.plots_at -= 2 * live.plots_gap  # figures due
    assert live.wants_detail("baseline", 2) and live.wants_detail("baseline", 2)
    assert not live.wants_detail("baseline", 3)
    assert live.wants_detail("pyramid", 2)
    live.outputs()  # the first update: text only, so that drawing never holds back the first text
    assert live.wants_detail("baseline", 2)  # still the figures' step
    live.outputs()  # draws the figures: the next refresh gets fresh detail
    live.plots_at -= 2 * live.plots_gap
    assert live.wants_detail("baseline", 5)
