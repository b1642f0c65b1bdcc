"""The studio: every KV-cache mode generating live, side by side with the baseline, and the figures
that show what each mode keeps.

Wiring only: generation is pyramid_core (compare.compare), figures are visual/. Handlers are top-level
functions; gr.State holds the run's records as plain dicts; models sit in a small read-only loader
cache; GPU events share one concurrency slot, and every torch call runs on one thread
(pyramid_core/torch_thread.py). `python app.py` serves it (GRADIO_SERVER_NAME and GRADIO_SERVER_PORT
are honoured by Gradio's launch()); PYRAMID_MODEL sets the default model.
"""

import contextlib
import dataclasses
import functools
import html
import inspect
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import torch

import visual
from pyramid_core.compare import compare, first_difference, live_stats, slim
from pyramid_core.engine import Sampling
from pyramid_core.models import (EMBEDDED_NAME, LoadedModel, ModelLoadError, default_device, load_config,
                                 load_model)
from pyramid_core.policies import ALL_POLICIES
from pyramid_core.policies.pyramid import PRESETS
from pyramid_core.policies.registry import make_policy
from pyramid_core.metrics import first_sequence_tokens
from pyramid_core.torch_thread import on_torch_thread
from pyramid_core.trace import StepRecord

try:  # ZeroGPU on Hugging Face Spaces; elsewhere the decorator is not needed
    import spaces
    gpu = spaces.GPU(duration=120)
except ImportError:
    def gpu(fn):
        return fn

log = logging.getLogger("app")

ROOT = Path(__file__).resolve().parent
SAMPLE_PROMPTS = json.loads((ROOT / "assets" / "sample_prompts.json").read_text())
DEFAULT_MODEL = os.environ.get("PYRAMID_MODEL", EMBEDDED_NAME)
BASELINE = "baseline"
MODES = visual.MODES                                   # every mode the studio knows, in pane order
AVAILABLE = [m for m in MODES if m in ALL_POLICIES]    # checked at import: new policies light up
NOT_AVAILABLE = "not available yet"
DEFAULT_MODES = [m for m in (BASELINE, "pyramid") if m in AVAILABLE]
BUDGET_KNOB = "kv_budget"  # one slider for every mode that has it, not a knob per mode
NO_PRESET = "(none)"
MEAN_HEAD = "mean over heads"
STEP_CHOICES = ("latest step", "prefill")
TEXT_EVERY_S = 0.2    # panes refresh at most this often (and at the end),
TEXT_SHARE = 0.03     # and rarely enough that their updates (building, Gradio's processing) take at most this
PLOTS_EVERY_S = 1.5   # figures and the table refresh at most this often (and at the end),
PLOTS_SHARE = 0.03    # and rarely enough that their updates take at most this share of the time
MAX_MODELS = 2        # loaded models kept; the oldest goes first
QUEUE_POLL_S = {"sleep_when_free": 0.02, "progress_update_sleep_when_free": 0.1}  # see quiet_queue
EXPORT_ROOT = Path(tempfile.gettempdir()) / "pyramid_studio"
CSS = """
.pane-text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.9em;
             min-height: 6em; max-height: 24em; overflow-y: auto; }
.pane-text mark { background: #ffe08a; }
"""

_models: OrderedDict = OrderedDict()
_models_lock = threading.Lock()
_stops: dict[str, threading.Event] = {}


# ----------------------------------------------------------------------------- knobs from the dataclasses

def knob_fields() -> list[tuple[str, dataclasses.Field]]:
    """(mode, field) for every user knob of every available mode, in declaration order."""
    return [(mode, f) for mode in AVAILABLE if dataclasses.is_dataclass(ALL_POLICIES[mode])
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


def build_policies(modes: list[str], budget: float, knob_values) -> dict:
    """{mode: policy}; a knob out of range raises ValueError naming the mode and the knob."""
    policies = {}
    for mode in modes:
        knobs = {f.name: _knob_value(f, v) for (m, f), v in zip(KNOBS, knob_values) if m == mode and v is not None}
        has_budget = any(f.name == BUDGET_KNOB for f in dataclasses.fields(ALL_POLICIES[mode]))
        try:
            policies[mode] = make_policy(mode, knobs, kv_budget=budget if budget and has_budget else None)
        except ValueError as err:
            raise ValueError(f"{mode}: {err}") from err
    return policies


def _knob_value(f: dataclasses.Field, value):
    if isinstance(f.default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def preset_values(preset: str) -> list:
    """Knob widget values for a pyramid preset (other modes' knobs unchanged), then the budget slider."""
    chosen = PRESETS.get(preset, {})
    values = [chosen.get(f.name, f.default) if mode == "pyramid" else gr.skip() for mode, f in KNOBS]
    return values + [chosen.get(BUDGET_KNOB, 0.0)]


# ----------------------------------------------------------------------------- models

def model_key(name: str) -> tuple:
    """(name, dtype, device): how loaded models are kept; an empty name is the embedded model."""
    return ((name or "").strip() or EMBEDDED_NAME, "auto", default_device())


def get_model(name: str) -> LoadedModel:
    """A loaded model, shared read-only by every session."""
    key = model_key(name)
    with _models_lock:
        if key not in _models:
            _models[key] = on_torch_thread(load_model, key[0], device=key[2], dtype=key[1])
            while len(_models) > MAX_MODELS:
                _models.popitem(last=False)
        _models.move_to_end(key)
        return _models[key]


def model_config(model_id):
    """A loaded model's config, or the config file alone for a model not loaded yet."""
    key = model_key(model_id)
    with _models_lock:
        loaded = _models.get(key)
    return loaded.config if loaded is not None else load_config(key[0])


# ----------------------------------------------------------------------------- the handler boundary

@contextlib.contextmanager
def user_errors(name: str):
    """Known failures become a sentence for the user; anything else is logged and summarised."""
    try:
        yield
    except gr.Error:
        raise
    except ModelLoadError as err:
        raise gr.Error(f"Could not load the model: {err}") from err
    except torch.OutOfMemoryError as err:
        raise gr.Error("Out of GPU memory: try a shorter prompt, fewer modes or fewer new tokens.") from err
    except ValueError as err:
        raise gr.Error(str(err)) from err
    except Exception as err:
        log.exception("handler %s failed", name)
        raise gr.Error(f"Something went wrong ({type(err).__name__}); the server log has the details.") from err


def handler_boundary(fn):
    """The one catch-all, around a handler (plain or streaming)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            with user_errors(fn.__name__):
                yield from fn(*args, **kwargs)
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with user_errors(fn.__name__):
            return fn(*args, **kwargs)
    return call


# ----------------------------------------------------------------------------- live rendering

class Live:
    """The growing runs of one comparison, and what the panes and figures show of them."""

    def __init__(self, lm: LoadedModel, modes: list[str], view: dict):
        self.lm, self.modes, self.view = lm, modes, view
        self.runs: dict[str, list[StepRecord]] = {m: [] for m in modes}
        self.text_at = self.plots_at = 0.0
        self.text_gap, self.plots_gap = TEXT_EVERY_S, PLOTS_EVERY_S
        self.plotted = False  # whether the last update carried figures
        self.update_s = None  # running mean of a pane update's cost
        self.detail_steps: dict[str, int] = {}  # mode -> the step recorded in detail for the next figures
        self.figures = [gr.skip()] * 5  # the latest figures and table, as sent
        self.fit_view()

    def add(self, mode: str, record: StepRecord) -> None:
        self.runs[mode].append(record)
        slim(self.runs[mode])

    def due(self) -> bool:
        return time.monotonic() - self.text_at >= self.text_gap

    def sent(self, seconds: float) -> None:
        """An update took `seconds` from building it to the handler's next step: through a server, the
        generation waits while Gradio processes and sends it (~6 ms a pane update on a 2-core CPU, more
        with figures), so updates come rarely enough that they stay a small share of the run."""
        if self.plotted:  # slow figures (long runs, many layers) are redrawn less often
            self.plots_gap = max(PLOTS_EVERY_S, seconds / PLOTS_SHARE)
            return
        self.update_s = seconds if self.update_s is None else (self.update_s + seconds) / 2
        self.text_gap = max(TEXT_EVERY_S, self.update_s / TEXT_SHARE)

    def wants_detail(self, mode: str, step: int) -> bool:
        """Record attention and kept positions at the prefill, and at one step of each mode once the
        figures are due (the engine asks twice per step, for attention and for positions)."""
        if step == 0 or self.detail_steps.get(mode) == step:
            return True
        if mode in self.detail_steps or time.monotonic() - self.plots_at < self.plots_gap:
            return False
        self.detail_steps[mode] = step
        return True

    def outputs(self, final: bool = False) -> list:
        now = time.monotonic()
        plots = final or now - self.plots_at >= self.plots_gap
        texts = {m: self.text(m) for m in self.modes}
        # panes of modes not in this run are blanked rather than skipped: Gradio 6 rebuilds a component
        # for every gr.skip() output of every update (~0.7 ms each, 2-core CPU), plain values cost ~0.15
        panes = [pane_html(texts[m], texts.get(BASELINE)) if m in texts else BLANK_PANE for m in MODES]
        stats = [pane_stats(self.runs[m], texts[m], texts.get(BASELINE)) if m in texts else "" for m in MODES]
        if plots:  # the steps recorded in detail from here on are for the next figures
            self.figures = as_sent(run_figures(self.runs, self.view))
            self.detail_steps = {}
        self.plotted = plots
        self.text_at = time.monotonic()
        self.plots_at = self.text_at if plots else self.plots_at
        state = run_state(self.lm, self.runs) if final else gr.skip()
        return panes + stats + self.figures + [state]

    def text(self, mode: str) -> str:
        ids = first_sequence_tokens(self.runs[mode])
        return self.lm.tokenizer.decode(ids, skip_special_tokens=True)

    def fit_view(self) -> None:
        """The attention view's layer, head and mode, within this model and run (the controls themselves
        follow the model box and the modes: fit_attention_controls, show_panes)."""
        cfg = self.lm.config
        layer = min(int(self.view["layer"] or 0), cfg.num_hidden_layers - 1)
        head = self.view["head"] if self.view["head"] in head_choices(cfg) else MEAN_HEAD
        mode = self.view["mode"] if self.view["mode"] in self.modes else self.modes[0]
        self.view.update(layer=layer, head=head, mode=mode)


def head_choices(config) -> list[str]:
    return [MEAN_HEAD] + [f"head {h}" for h in range(config.num_attention_heads)]


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
    line = (f"**{speed}** · KV **{s['kv_mib']:.2f} MiB** (peak {s['peak_kv_mib']:.2f}) · "
            f"{s['tokens']} tokens after a {s['prompt_tokens']}-token prompt")
    cut = first_difference(text, baseline) if baseline is not None else None
    return line + (f" · departs from the baseline at character {cut}" if cut is not None else "")


def run_figures(runs, view: dict) -> list:
    """KV memory, pyramid, attention (all layers, and the chosen layer), summary table."""
    runs = {m: r for m, r in runs.items() if r}
    grid, bars = attention_figures(runs, view)
    return [visual.kv_memory_figure(runs), visual.pyramid_figure(runs), grid, bars, summary_table(runs)]


SENT_PLOT = gr.Plot(render=False)  # its postprocess is what Gradio runs on a figure; a PlotData passes through


def as_sent(figures: list) -> list:
    """run_figures' figures as Gradio sends them, and its table: the pane updates between two figure
    refreshes send them again, which costs Gradio ~0.15 ms each and adds nothing to the stream (its diff
    of an unchanged value is empty), where a gr.skip() costs ~0.7 ms (Gradio 6 rebuilds the component;
    2-core CPU)."""
    *plots, table = figures
    return [SENT_PLOT.postprocess(f) for f in plots] + [table]


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


def run_state(lm: LoadedModel, runs) -> dict:
    return {"model": lm.name, "runs": {m: [r.to_dict() for r in run] for m, run in runs.items() if run}}


# ----------------------------------------------------------------------------- handlers

def usable_modes(modes: list[str] | None) -> list[str]:
    """The selected modes that exist; a warning names those that do not yet."""
    modes = [m for m in MODES if m in (modes or [])]
    missing = [m for m in modes if m not in AVAILABLE]
    if missing:
        gr.Warning(f"{', '.join(missing)}: {NOT_AVAILABLE}, left out of this run.")
    usable = [m for m in modes if m in AVAILABLE]
    if not usable:
        raise gr.Error("Select at least one available mode (" + ", ".join(AVAILABLE) + ").")
    return usable


@gpu
@handler_boundary
def generate_run(request: gr.Request, model_id, modes, budget, temperature, top_p, seed, max_new_tokens,
                 prompt, attn_mode, attn_step, layer, head, *knob_values):
    """Stream every selected mode on the prompt, generated on the torch thread: panes every TEXT_EVERY_S
    and figures every PLOTS_EVERY_S, or less often when their updates cost more (Live.sent)."""
    modes = usable_modes(modes)
    if not (prompt or "").strip():
        raise gr.Error("The prompt is empty: type one or pick a sample prompt.")
    policies = build_policies(modes, budget, knob_values)
    sampling = Sampling(float(temperature), float(top_p), None if seed in (None, "") else int(seed))
    lm = get_model(model_id)
    live = Live(lm, modes, {"mode": attn_mode, "step": attn_step, "layer": layer, "head": head})
    stop = _stops[_session(request)] = threading.Event()
    records = compare(lm, prompt, policies, int(max_new_tokens), sampling, stop=stop,
                      record_attention=live.wants_detail, record_positions=live.wants_detail)
    try:
        while not on_torch_thread(advance, records, live):
            started = time.monotonic()
            yield live.outputs()
            live.sent(time.monotonic() - started)
        yield live.outputs(final=True)
    finally:
        on_torch_thread(records.close)  # a stream closed early (the page left) ends the generation
        _stops.pop(_session(request), None)


def advance(records, live: Live) -> bool:
    """Generate until the panes are due; True once every mode has finished."""
    for mode, record in records:
        live.add(mode, record)
        if live.due():
            return False
    return True


def stop_run(request: gr.Request) -> None:
    """Ask this session's running generation to finish after the current step."""
    event = _stops.get(_session(request))
    if event is not None:
        event.set()


@handler_boundary
def redraw_attention(state, mode, step, layer, head):
    """The attention figures from the stored records: no regeneration."""
    runs = {m: [visual.as_record(r) for r in run] for m, run in (state or {}).get("runs", {}).items()}
    return attention_figures(runs, {"mode": mode, "step": step, "layer": layer, "head": head})


def show_panes(modes, attn_mode=None):
    """One pane per selected mode; the attention view offers the same modes (keeping its pick if it can)."""
    chosen = [m for m in MODES if m in (modes or [])]
    offered = chosen or list(MODES)
    pick = attn_mode if attn_mode in offered else offered[0]
    return [gr.update(visible=m in chosen) for m in MODES] + [gr.update(choices=offered, value=pick)]


@handler_boundary
def fit_attention_controls(model_id, layer, head):
    """The layer slider and head choices of the model in the model box (its config alone is read)."""
    config = model_config(model_id)
    heads = head_choices(config)
    return (gr.update(maximum=config.num_hidden_layers - 1, value=min(int(layer or 0), config.num_hidden_layers - 1)),
            gr.update(choices=heads, value=head if head in heads else MEAN_HEAD))


@gpu
@handler_boundary
def recency_run(model_id, prompt, adapter=""):
    """RecurFormer's recency score of every head, on the prompt (or the held-out text when it is empty),
    with the heads of the KV groups that the RecurFormer adapter knob's adapter replaces marked."""
    try:
        from pyramid_core.recurformer.recency import recency_scores
    except ImportError:
        return visual.empty_figure(f"Recency scores: RecurFormer is {NOT_AVAILABLE}.")
    text = prompt if (prompt or "").strip() else (ROOT / "assets" / "heldout.txt").read_text()
    lm = get_model(model_id)
    report = on_torch_thread(recency_scores, lm, text, max_sequences=1)
    report.replaced = replaced_groups(lm, adapter)
    return visual.recency_figure(report)


def replaced_groups(lm: LoadedModel, adapter: str | None) -> list[list[int]]:
    """[layer, kv_group] pairs the adapter replaces (the shipped one when none is named); none, with a
    warning, when that adapter was made for a model of another shape."""
    from pyramid_core.policies.recurformer import DEFAULT_ADAPTER
    from pyramid_core.recurformer.adapter import check_adapter, load_adapter

    try:
        chosen = load_adapter(adapter or DEFAULT_ADAPTER)
        check_adapter(chosen, lm)
    except ValueError as err:
        gr.Warning(f"Replaced heads not marked: {err}")
        return []
    return chosen.groups


@handler_boundary
def export_run(state, request: gr.Request = None):
    """The run's trace JSON and its figures (standalone HTML) in this session's own directory."""
    runs = (state or {}).get("runs")
    if not runs:
        raise gr.Error("Nothing to export yet: generate first.")
    out = EXPORT_ROOT / _session(request)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    trace = out / "trace.json"
    trace.write_text(visual.records_to_json(runs))
    figs = {"kv_memory": visual.kv_memory_figure(runs), "pyramid": visual.pyramid_figure(runs),
            "kept_tokens": visual.kept_tokens_figure(runs)}
    for mode, run in runs.items():
        figs[f"attention_{mode.replace('+', '_')}"] = visual.attention_grid_figure(run[-1])
    return [str(trace)] + [str(p) for p in visual.figures_to_files(figs, out)]


def forget_session(request: gr.Request) -> None:
    shutil.rmtree(EXPORT_ROOT / _session(request), ignore_errors=True)
    _stops.pop(_session(request), None)


def _session(request) -> str:
    return getattr(request, "session_hash", None) or "local"


# ----------------------------------------------------------------------------- layout

def mode_choices() -> list[tuple[str, str]]:
    return [(m if m in AVAILABLE else f"{m} ({NOT_AVAILABLE})", m) for m in MODES]


def build_ui() -> gr.Blocks:
    with gr.Blocks(title="KV-cache compression studio") as demo:
        gr.Markdown("# KV-cache compression studio\nEvery selected mode generates on the same prompt, "
                    "side by side with the full-cache baseline. Text that departs from the baseline is "
                    "highlighted; the figures below show what each mode keeps.")
        state = gr.State({})
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                model_id = gr.Textbox(DEFAULT_MODEL, label="Model",
                                      info="'embedded' (shipped in assets/), a local directory or a hub id")
                modes = gr.CheckboxGroup(mode_choices(), value=DEFAULT_MODES, label="Modes",
                                         info=(f"modes marked '{NOT_AVAILABLE}' are not implemented yet"
                                               if len(AVAILABLE) < len(MODES) else
                                               "each selected mode runs side by side with the baseline"),
                                         elem_id="modes")
                budget = gr.Slider(0, 1, value=0, step=0.05, label="KV budget (share of the full cache)",
                                   info="0 = off: pyramid uses its decay knobs, streaming its own default; "
                                        "applies to pyramid and streaming")
                preset = gr.Dropdown([NO_PRESET, *PRESETS], value=NO_PRESET, label="Pyramid preset",
                                     info="fills the pyramid knobs (and the budget) below")
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature", info="0 = greedy")
                    top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top-p")
                    seed = gr.Number(0, precision=0, label="seed", info="empty = unseeded")
                max_new = gr.Slider(1, 1024, value=64, step=1, label="max new tokens", elem_id="max-new")
                knobs = []
                for mode in MODES:
                    with gr.Accordion(f"{mode} knobs", open=False):
                        fields = [f for m, f in KNOBS if m == mode]
                        if mode not in AVAILABLE:
                            gr.Markdown(f"*{NOT_AVAILABLE}*")
                        elif not fields:
                            gr.Markdown("*no knobs: the full cache*")
                        knobs += [knob_component(f) for f in fields]
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=6, placeholder="Type a prompt or pick a sample below")
                gr.Examples([[p["prompt"]] for p in SAMPLE_PROMPTS], inputs=[prompt],
                            example_labels=[p["name"] for p in SAMPLE_PROMPTS], label="Sample prompts")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary")
                    stop_btn = gr.Button("Stop", variant="stop")
                panes, texts, stats = [], [], []
                with gr.Row(equal_height=True):
                    for mode in MODES:
                        with gr.Column(visible=mode in DEFAULT_MODES, min_width=220) as pane:
                            gr.Markdown(f"### {mode}")
                            texts.append(gr.HTML(pane_html("", None), elem_id=f"pane-{_slug(mode)}"))
                            stats.append(gr.Markdown("", elem_id=f"stats-{_slug(mode)}"))
                        panes.append(pane)
        with gr.Row():
            kv_plot = gr.Plot(visual.kv_memory_figure({}), label="KV memory", elem_id="kv-plot")
            pyramid_plot = gr.Plot(visual.pyramid_figure({}), label="Pyramid", elem_id="pyramid-plot")
        with gr.Tabs():
            with gr.Tab("Attention"):
                with gr.Row():
                    attn_mode = gr.Dropdown(list(MODES), value=DEFAULT_MODES[0], label="mode")
                    attn_step = gr.Radio(list(STEP_CHOICES), value=STEP_CHOICES[0], label="step")
                    config = model_config(DEFAULT_MODEL)
                    layer = gr.Slider(0, config.num_hidden_layers - 1, value=0, step=1, label="layer")
                    head = gr.Dropdown(head_choices(config), value=MEAN_HEAD, label="head")
                with gr.Row():
                    attn_grid = gr.Plot(label="Attention, every layer")
                    attn_bars = gr.Plot(label="Attention, one layer")
            with gr.Tab("Recency (RecurFormer)"):
                recency_btn = gr.Button("Compute recency scores on the prompt (empty: the held-out text)")
                recency_plot = gr.Plot(visual.empty_figure("Press the button to score every head."))
            with gr.Tab("Summary"):
                table = gr.Dataframe(headers=[h for _, h in visual.COLUMNS], label="Summary", interactive=False)
            with gr.Tab("Export"):
                export_btn = gr.Button("Export trace (JSON) and figures (HTML)")
                files = gr.File(label="Downloads", file_count="multiple")

        # controls -> generation -> panes, figures, table, state
        gen_inputs = [model_id, modes, budget, temperature, top_p, seed, max_new, prompt,
                      attn_mode, attn_step, layer, head, *knobs]
        gen_outputs = [*texts, *stats, kv_plot, pyramid_plot, attn_grid, attn_bars, table, state]
        gr.on([generate_btn.click, prompt.submit], generate_run, gen_inputs, gen_outputs,
              concurrency_id="gpu", concurrency_limit=1, api_name="generate", show_progress="minimal")
        stop_btn.click(stop_run, None, None, api_name="stop", queue=False)
        modes.change(show_panes, [modes, attn_mode], [*panes, attn_mode], api_name=False)
        gr.on([model_id.submit, model_id.blur], fit_attention_controls, [model_id, layer, head], [layer, head],
              api_name=False)
        preset.change(preset_values, preset, [*knobs, budget], api_name=False)
        # stored records -> attention figures (no regeneration)
        gr.on([attn_mode.input, attn_step.input, layer.release, head.input], redraw_attention,
              [state, attn_mode, attn_step, layer, head], [attn_grid, attn_bars], api_name="attention")
        adapter_knob = knobs[[(m, f.name) for m, f in KNOBS].index(("recurformer", "adapter"))]
        recency_btn.click(recency_run, [model_id, prompt, adapter_knob], recency_plot, concurrency_id="gpu",
                          concurrency_limit=1, api_name="recency")
        export_btn.click(export_run, state, files, api_name="export")
        demo.unload(forget_session)
    return quiet_queue(demo)  # Blocks made its queue already; launch() keeps it


def quiet_queue(demo: gr.Blocks) -> gr.Blocks:
    """Slow the polling of Gradio's queue from every 1 ms (and 10 ms for progress) to QUEUE_POLL_S.

    Each wake of the server's event loop takes the GIL from the thread that generates: in a 7 s run of
    the embedded model on a 2-core CPU the event loop's thread spent ~0.7 CPU-s, ~0.3 with these
    settings (benchmarks/app_overhead.md). 20 ms more before a queued event starts is not noticeable.
    These are attributes of gradio.queueing.Queue, not public settings: tests/test_app.py checks that
    Gradio still reads them."""
    for name, seconds in QUEUE_POLL_S.items():
        if not hasattr(demo._queue, name):
            log.warning("Gradio's queue has no %s any more: its polling is left as it is", name)
            continue
        setattr(demo._queue, name, seconds)
    return demo


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
