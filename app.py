"""The studio: every KV-cache mode generating live, side by side with the baseline, and the figures
that show what each mode keeps.

Layout and short handlers only: generation is pyramid_core, figures are visual/, and what lies between
(the run's request, live state and refresh schedule, model cache, panes, export, the error boundary,
the torch thread) is studio/. gr.State holds the run's records as plain dicts; GPU events share one
concurrency slot. `python app.py` serves it (GRADIO_SERVER_NAME and GRADIO_SERVER_PORT are honoured by
Gradio's launch()); PYRAMID_MODEL sets the default model.
"""

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

import visual
from pyramid_core.models import EMBEDDED_NAME, ModelLoadError
from pyramid_core.policies.pyramid import PRESETS
from pyramid_core.resources import asset
from studio import export, heap, sessions
from studio.api import compare_json
from studio.errors import handler_boundary
from studio.messages import note_html, shown_in_page
from studio.figures import MEAN_HEAD, STEP_CHOICES, attention_figures, head_choices
from studio.kept_words import ALL_LAYERS, DEFAULT_PAIR, NOTHING_YET, kept_words_view, layer_choices
from studio.knobs import KNOBS, NO_PRESET, knob_component, preset_values
from studio.model_cache import get_model, model_config
from studio.modes import DEFAULT_MODES, MODES
from studio.panes import BLANK_PANE
from studio.picker import picker_choices
from studio.queue import bounded_queue, quiet_queue, stop_on_disconnect
from studio.recency import recency_figure
from studio.request import RunRequest, form_names, knob_name, with_form_signature
from studio.sent import TABLE_HEADERS, plot
from studio.stream import stream_run

try:  # ZeroGPU on Hugging Face Spaces; elsewhere the decorator is not needed
    import spaces
    gpu = spaces.GPU(duration=120)
except ImportError:
    def gpu(fn):
        return fn

log = logging.getLogger("app")

SAMPLE_PROMPTS = json.loads(asset("sample_prompts.json").read_text())
DEFAULT_MODEL = os.environ.get("PYRAMID_MODEL", EMBEDDED_NAME)
CSS = (Path(__file__).parent / "studio" / "page.css").read_text()


# ----------------------------------------------------------------------------- handlers

@with_form_signature
@gpu
@shown_in_page(before=2 * len(MODES) + 7)  # panes, stats, four figures, the table, the state, the prompt box
def generate_run(request: gr.Request, *form):
    """Stream every selected mode on the prompt; the form's values arrive in form_names() order."""
    run = RunRequest.from_form(form)
    with sessions.stoppable(request) as stop:
        yield from stream_run(run, stop)


def stop_run(request: gr.Request) -> None:
    sessions.stop(request)


@handler_boundary
def redraw_attention(state, mode, step, layer, head):
    """The attention figures from the stored records: no regeneration."""
    runs = {m: [visual.as_record(r) for r in run] for m, run in (state or {}).get("runs", {}).items()}
    grid, bars = attention_figures(runs, {"mode": mode, "step": step, "layer": layer, "head": head})
    return plot(grid), plot(bars)


def show_panes(modes, attn_mode=None):
    """One pane per selected mode; the attention view offers the same modes (keeping its pick if it can)."""
    chosen = [m for m in MODES if m in (modes or [])]
    offered = chosen or list(MODES)
    pick = attn_mode if attn_mode in offered else offered[0]
    return [gr.update(visible=m in chosen) for m in MODES] + [gr.update(choices=offered, value=pick)]


@handler_boundary
def show_kept_words(state, left, right, layer):
    """Which words two modes kept, from the stored records: no regeneration."""
    return kept_words_view(state, left, right, layer)


def fit_attention_controls(model_id, layer, head, kept_layer=ALL_LAYERS):
    """The layer controls and head choices of the model picked or typed (its config alone is read);
    a model that cannot be read is said once, in the page's message box, and the controls stay."""
    try:
        config = model_config(model_id)
    except ModelLoadError as err:
        return gr.skip(), gr.skip(), gr.skip(), note_html(f"Could not load the model: {err}")
    heads, layers = head_choices(config), layer_choices(config)
    return (gr.update(maximum=config.num_hidden_layers - 1, value=min(int(layer or 0), config.num_hidden_layers - 1)),
            gr.update(choices=heads, value=head if head in heads else MEAN_HEAD),
            gr.update(choices=layers, value=kept_layer if kept_layer in layers else ALL_LAYERS), "")


@gpu
def recency_run(model_id, prompt, adapter=""):
    """Every head's recency score, with the heads the RecurFormer adapter knob's adapter replaces marked;
    any failure (a bad input, out of memory, a bug) is said in the figure's place, not over the page."""
    try:
        return _recency(model_id, prompt, adapter)
    except gr.Error as err:
        return plot(visual.empty_figure(err.message))


@handler_boundary
def _recency(model_id, prompt, adapter):
    return plot(recency_figure(get_model(model_id), prompt, adapter))


@gpu
@handler_boundary
def compare_api(prompt: str, modes: list[str], budget: float = 0.0, max_new_tokens: int = 32,
                knobs: dict | None = None, model_id: str = DEFAULT_MODEL, temperature: float = 0.0,
                top_p: float = 1.0, seed: int | None = 0, chat: bool | None = None) -> dict:
    """Every mode on the prompt, as JSON: text, token ids, KV share asked and reached, KV bytes,
    tokens/s per mode (studio/api.py). knobs: {mode: {knob: value}}; chat: False sends the raw prompt to
    a model with a chat template (default: the template)."""
    return compare_json(prompt, modes, budget, max_new_tokens, knobs, model_id, temperature, top_p, seed,
                        chat=chat)


@handler_boundary
def export_run(state, request: gr.Request = None):
    """The run's trace JSON and its figures (standalone HTML) in this session's own directory."""
    runs = (state or {}).get("runs")
    if not runs:
        raise gr.Error("Nothing to export yet: generate first.")
    return export.export_run(runs, sessions.export_dir(request))


def release_sessions(demo: gr.Blocks):
    """The unload handler: a session that ended leaves nothing behind (sessions.forget)."""
    def forget_session(request: gr.Request) -> None:
        sessions.forget(request, getattr(demo, "state_holder", None))
    return forget_session


# ----------------------------------------------------------------------------- layout

def controls_column() -> SimpleNamespace:
    """Model, chat template, modes, budget, preset, sampling, new tokens and every mode's knobs (named
    knob_name(...))."""
    ui = SimpleNamespace()
    ui.model_id = gr.Dropdown(picker_choices(), value=DEFAULT_MODEL, allow_custom_value=True, label="Model",
                              info="pick one, or type a hub id (owner/name) or a local directory")
    ui.chat = gr.Checkbox(True, label="Chat template",
                          info="instruct models read the prompt as a user turn in their chat template; "
                               "off: the raw text (models without a template always get it)")
    ui.modes = gr.CheckboxGroup(list(MODES), value=DEFAULT_MODES, label="Modes", elem_id="modes",
                                info="each selected mode runs side by side with the baseline")
    with gr.Row():
        ui.budget = gr.Slider(0, 1, value=0, step=0.05, label="KV budget (share of the full cache)",
                              info="held over the generation, solved per prompt for pyramid, streaming, h2o "
                                   "and snapkv; 0 = off (their own knobs)")
        ui.kv_tokens = gr.Number(0, precision=0, minimum=0, label="or KV tokens per layer", info="0 = off")
    ui.preset = gr.Dropdown([NO_PRESET, *PRESETS], value=NO_PRESET, label="Pyramid preset",
                            info="fills the pyramid knobs (and the budget) below")
    with gr.Accordion("Sampling", open=False):
        ui.temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature", info="0 = greedy")
        ui.top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top-p")
        ui.seed = gr.Number(0, precision=0, label="seed", info="empty = unseeded")
    ui.max_new_tokens = gr.Slider(1, 1024, value=64, step=1, label="max new tokens", elem_id="max-new")
    ui.knobs = {}
    for mode in MODES:
        with gr.Accordion(f"{mode} knobs", open=False):
            fields = [f for m, f in KNOBS if m == mode]
            if not fields:
                gr.Markdown("*no knobs: the full cache*")
            ui.knobs.update({knob_name(mode, f.name): knob_component(f) for f in fields})
    return ui


def prompt_and_panes(ui: SimpleNamespace) -> None:
    ui.prompt = gr.Textbox(label="Prompt", lines=6, placeholder="Type a prompt or pick a sample below")
    gr.Examples([[p["prompt"]] for p in SAMPLE_PROMPTS], inputs=[ui.prompt],
                example_labels=[p["name"] for p in SAMPLE_PROMPTS], label="Sample prompts")
    with gr.Row():
        ui.generate_btn = gr.Button("Generate", variant="primary")
        ui.stop_btn = gr.Button("Stop", variant="stop")
    ui.message = gr.HTML("", elem_id="message")  # errors and notices of a run, where the user looks
    with gr.Accordion("Prompt as the model sees it", open=False):
        ui.model_prompt = gr.Code("", language=None, lines=3, max_lines=20, interactive=False, wrap_lines=True,
                                  label="the text tokenized (chat template and special tokens included), "
                                        "set when a run starts", elem_id="model-prompt")
    ui.panes, ui.texts, ui.stats = [], [], []
    with gr.Row(equal_height=True):
        for mode in MODES:
            with gr.Column(visible=mode in DEFAULT_MODES, min_width=220) as pane:
                gr.Markdown(f"### {mode}")
                ui.texts.append(gr.HTML(BLANK_PANE, elem_id=f"pane-{_slug(mode)}"))
                ui.stats.append(gr.Markdown("", elem_id=f"stats-{_slug(mode)}"))
            ui.panes.append(pane)


def figures_and_tabs(ui: SimpleNamespace) -> None:
    with gr.Row():
        ui.kv_plot = gr.Plot(plot(visual.kv_memory_figure({})), label="KV memory", elem_id="kv-plot")
        ui.pyramid_plot = gr.Plot(plot(visual.pyramid_figure({})), label="Pyramid", elem_id="pyramid-plot")
    config = model_config(DEFAULT_MODEL)
    with gr.Tabs():
        with gr.Tab("Kept words"):  # the studio's signature view: the text itself, as each mode holds it
            with gr.Row():
                ui.kept_left = gr.Dropdown(list(MODES), value=DEFAULT_PAIR[0], label="left")
                ui.kept_right = gr.Dropdown(list(MODES), value=DEFAULT_PAIR[1], label="right")
                ui.kept_layer = gr.Dropdown(layer_choices(config), value=ALL_LAYERS, label="layer")
            ui.kept_words = gr.HTML(NOTHING_YET, elem_id="kept-words")
        with gr.Tab("Attention"):
            with gr.Row():
                ui.attn_mode = gr.Dropdown(list(MODES), value=DEFAULT_MODES[0], label="mode")
                ui.attn_step = gr.Radio(list(STEP_CHOICES), value=STEP_CHOICES[0], label="step")
                ui.layer = gr.Slider(0, config.num_hidden_layers - 1, value=0, step=1, label="layer")
                ui.head = gr.Dropdown(head_choices(config), value=MEAN_HEAD, label="head")
            with gr.Row():
                ui.attn_grid = gr.Plot(label="Attention, every layer")
                ui.attn_bars = gr.Plot(label="Attention, one layer")
        with gr.Tab("Recency (RecurFormer)"):
            ui.recency_btn = gr.Button("Compute recency scores on the prompt (empty: the held-out text)")
            ui.recency_plot = gr.Plot(plot(visual.empty_figure("Press the button to score every head.")),
                                      label="Recency of every head", elem_id="recency-plot")
        with gr.Tab("Summary"):
            ui.table = gr.Dataframe(headers=TABLE_HEADERS, label="Summary", interactive=False)
        with gr.Tab("Export"):
            ui.export_btn = gr.Button("Export trace (JSON) and figures (HTML)")
            ui.files = gr.File(label="Downloads", file_count="multiple")


def wire(ui: SimpleNamespace, demo: gr.Blocks) -> None:
    # controls -> generation -> panes, figures, table, state; the inputs by their form names
    form = {**vars(ui), **ui.knobs}
    outputs = [*ui.texts, *ui.stats, ui.kv_plot, ui.pyramid_plot, ui.attn_grid, ui.attn_bars, ui.table, ui.state,
               ui.model_prompt, ui.message]
    kept = [ui.state, ui.kept_left, ui.kept_right, ui.kept_layer]
    gr.on([ui.generate_btn.click, ui.prompt.submit], generate_run, [form[n] for n in form_names()], outputs,
          concurrency_id="gpu", concurrency_limit=1, api_name="generate", show_progress="hidden",
          postprocess=False,  # Live sends each value as postprocessed already (studio/sent.py)
          # RunRequest checks every value itself (an API caller can send anything), so Gradio's own
          # preprocessing of ~40 inputs is skipped: 6-7 ms less before a run starts (benchmarks/app_gpu.md)
          preprocess=False,
          ).then(show_kept_words, kept, ui.kept_words, api_name=False)
    gr.on([ui.kept_left.input, ui.kept_right.input, ui.kept_layer.input], show_kept_words, kept, ui.kept_words,
          api_name="kept_words")
    ui.stop_btn.click(stop_run, None, None, api_name="stop", queue=False)
    ui.modes.change(show_panes, [ui.modes, ui.attn_mode], [*ui.panes, ui.attn_mode], api_name=False)
    ui.model_id.change(fit_attention_controls, [ui.model_id, ui.layer, ui.head, ui.kept_layer],
                       [ui.layer, ui.head, ui.kept_layer, ui.message], api_name=False)
    ui.preset.change(preset_values, ui.preset, [*(ui.knobs[knob_name(m, f.name)] for m, f in KNOBS), ui.budget],
                     api_name=False)
    # stored records -> attention figures (no regeneration)
    gr.on([ui.attn_mode.input, ui.attn_step.input, ui.layer.release, ui.layer.input, ui.head.input], redraw_attention,
          [ui.state, ui.attn_mode, ui.attn_step, ui.layer, ui.head], [ui.attn_grid, ui.attn_bars], api_name="attention")
    ui.recency_btn.click(recency_run, [ui.model_id, ui.prompt, ui.knobs[knob_name("recurformer", "adapter")]],
                         ui.recency_plot, concurrency_id="gpu", concurrency_limit=1, api_name="recency")
    ui.export_btn.click(export_run, ui.state, ui.files, api_name="export")
    gr.api(compare_api, api_name="compare", concurrency_id="gpu", concurrency_limit=1)
    demo.unload(release_sessions(demo))


def build_ui() -> gr.Blocks:
    with gr.Blocks(title="KV-cache compression studio") as demo:
        gr.Markdown("# KV-cache compression studio\nEvery selected mode generates on the same prompt, "
                    "side by side with the full-cache baseline. Text that departs from the baseline is "
                    "highlighted; the figures below show what each mode keeps.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                ui = controls_column()
            with gr.Column(scale=3):
                prompt_and_panes(ui)
        figures_and_tabs(ui)
        ui.state = gr.State({})
        wire(ui, demo)
    heap.settle()  # the page's objects live as long as the server: out of the collector's full passes
    return stop_on_disconnect(bounded_queue(quiet_queue(demo)))  # Blocks made its queue already; launch() keeps it


def _slug(mode: str) -> str:
    return mode.replace("+", "-")


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    try:
        get_model(DEFAULT_MODEL)  # load once at start (ZeroGPU wants models loaded at module level)
    except ModelLoadError as err:
        log.warning("%s; the app starts anyway and says so when asked to generate", err)
    build_ui().launch(css=CSS, theme=gr.themes.Soft())


if __name__ == "__main__":
    main()
