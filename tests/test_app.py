"""The app, served in-process on a tiny local checkpoint and driven through gradio_client, plus its
handlers as plain functions. Tiny random models write gibberish: the tests check structure, growth and
messages, not words."""

from __future__ import annotations

import base64
import html
import json
import re
import threading
import time

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client

import app
from studio import stream
from studio.figures import MEAN_HEAD, STEP_CHOICES
from studio.kept_words import ALL_LAYERS
from studio.knobs import KNOBS
from studio.modes import MODES
from studio.queue import IDLE_POLL_S, QUEUE_POLL_S
from studio.sent import is_update
from visual.memory import PEAK_SUFFIX

from tests import served
from tests.served import free_port

PROMPT = "the cat sat on the mat and a dog ran far away " * 3
PANES = {mode: i for i, mode in enumerate(MODES)}          # output index of each mode's text pane
STATS = {mode: len(MODES) + i for i, mode in enumerate(MODES)}
KV_PLOT, PYRAMID_PLOT, ATTN_GRID, ATTN_BARS, TABLE = range(2 * len(MODES), 2 * len(MODES) + 5)


@pytest.fixture(scope="module")
def adapter(checkpoint, tmp_path_factory):
    """A RecurFormer adapter for the tiny checkpoint (the shipped one fits the embedded model only)."""
    from pyramid_core import load_model
    from tests.test_recurformer_engine import make_adapter

    return make_adapter(load_model(checkpoint, device="cpu"), tmp_path_factory.mktemp("adapter"), [[1, 0]])


@pytest.fixture(scope="module")
def server():
    demo = app.build_ui()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    served.close(demo)


@pytest.fixture()
def client(server, adapter):
    ADAPTER_KNOBS.update({(mode, "adapter"): adapter for mode in ("recurformer", "pyramid+recurformer")})
    return Client(server, verbose=False)


ADAPTER_KNOBS = {}  # (mode, "adapter") -> the tiny checkpoint's adapter, filled by the client fixture


def gen_args(model, **overrides):
    """The /generate inputs in order, with the app's defaults; knobs None = the dataclass default."""
    values = dict(model_id=model, modes=list(MODES), budget=0.0, kv_tokens=0, temperature=0.0, top_p=1.0, seed=0,
                  max_new=16, prompt=PROMPT, attn_mode=MODES[0], attn_step=STEP_CHOICES[0],
                  layer=0, head=MEAN_HEAD)
    knobs = {**ADAPTER_KNOBS, **overrides.pop("knobs", {})}
    chat = overrides.pop("chat", True)  # after the knobs (request.LATER)
    values.update(overrides)
    return [*values.values(), *[knobs.get((m, f.name)) for m, f in KNOBS], chat]


def is_value(output) -> bool:
    """False for a gr.skip() placeholder (an update with no props)."""
    return not (isinstance(output, dict) and output.get("__type__") == "update")


def plot_data(output) -> list[dict]:
    """The figure's traces, numpy columns decoded (Plotly sends them as base64 typed arrays)."""
    return [{key: typed_array(value) for key, value in trace.items()} for trace in json.loads(output["plot"])["data"]]


def typed_array(value):
    if isinstance(value, dict) and set(value) >= {"dtype", "bdata"}:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).tolist()
    return value


def run(client, *args) -> list[tuple]:
    job = client.submit(*args, api_name="/generate")
    job.result(timeout=60)
    return job.outputs()


# ----------------------------------------------------------------------------- through the server

def test_every_mode_streams_text_and_figures(client, checkpoint):
    outputs = run(client, *gen_args(checkpoint, max_new=120))  # long enough for figures before the end
    final = outputs[-1]
    for mode in MODES:
        # the pane is HTML whose <mark> around the departure from the baseline comes and goes: count text
        lengths = [len(re.sub(r"<[^>]+>", "", o[PANES[mode]])) for o in outputs if is_value(o[PANES[mode]])]
        assert len(lengths) >= 2 and lengths[-1] > lengths[0], f"{mode} pane did not grow: {lengths}"
        assert "120 tokens" in final[STATS[mode]] and "MiB" in final[STATS[mode]]
    kv = plot_data(final[KV_PLOT])
    assert sorted(t["name"] for t in kv) == sorted([*MODES] + [m + PEAK_SUFFIX for m in MODES])
    assert all(len(t["x"]) == 120 for t in kv)  # one point per step, prefill included
    pyramid = plot_data(final[PYRAMID_PLOT])
    assert [t["name"] for t in pyramid] == list(MODES) and all(t["type"] == "heatmap" for t in pyramid)
    assert plot_data(final[ATTN_GRID])[0]["type"] == "heatmap"
    assert [row[0] for row in final[TABLE]["data"]] == list(MODES)
    # the figures were drawn while generating too, not only at the end, and not at every pane update
    drawn = {o[KV_PLOT]["plot"] for o in outputs if is_value(o[KV_PLOT])}
    assert len(drawn) >= 2 and len(outputs) > len(drawn)


def test_after_a_run_every_figure_shows_each_modes_last_step(client, checkpoint):
    """Issue 18: the live view records detail only on the steps it draws; after a run the pyramid
    panels read "(step 44)" of 64 and the attention view showed step 22. Every figure now ends at the
    last step of each mode."""
    final = run(client, *gen_args(checkpoint, max_new=40, attn_mode="streaming"))[-1]
    titles = [a["text"] for a in json.loads(final[PYRAMID_PLOT]["plot"])["layout"]["annotations"]]
    panels = [t for t in titles if t.replace("+<br>", "+").split("<br>")[0] in MODES]  # "+" names break there
    assert len(panels) == len(MODES) and all(t.endswith("step 39") for t in panels)
    for plot in (final[ATTN_GRID], final[ATTN_BARS]):
        assert "step 39" in json.loads(plot["plot"])["layout"]["title"]["text"]
    for mode in MODES:  # the attention view at "latest step" of any mode, redrawn from the stored records
        grid, _ = client.predict(mode, STEP_CHOICES[0], 0, MEAN_HEAD, api_name="/attention")
        assert "step 39" in json.loads(grid["plot"])["layout"]["title"]["text"]


def test_kept_words_shows_the_prompt_as_two_modes_hold_it(client, checkpoint):
    run(client, *gen_args(checkpoint, max_new=6, budget=0.6))  # within pyramid's reach on this short prompt
    page = client.predict("pyramid", "streaming", ALL_LAYERS, api_name="/kept_words")
    left, right = page.split("<b>streaming</b>")
    for side in (left, right):
        text = "".join(re.findall(r"<span title='[^']*' style='[^']*'>([^<]*)</span>", side))
        assert text.startswith(PROMPT)  # the prompt's own text, token by token
        assert "attention of the newest token" in side
    assert "line-through" in right  # the window dropped the middle of the prompt
    assert "step 5" in left and "step 5" in right
    one = client.predict("streaming", "streaming", "layer 1", api_name="/kept_words")
    assert one.count("<b>streaming</b>") == 1 and "layer 1: holds" in one


def test_compressed_modes_hold_less_kv(client, checkpoint):
    knobs = {("pyramid", "min_context_length"): 4, ("pyramid", "prefill_decay_ratio"): 0.3}
    final = run(client, *gen_args(checkpoint, max_new=8, knobs=knobs))[-1]
    last_kv = {t["name"]: t["y"][-1] for t in plot_data(final[KV_PLOT])}
    assert last_kv["pyramid"] < last_kv["baseline"] and last_kv["streaming"] < last_kv["baseline"]


def test_panes_and_table_show_the_share_asked_and_reached(client, checkpoint):
    final = run(client, *gen_args(checkpoint, max_new=8, budget=0.5, modes=["baseline", "streaming", "h2o"]))[-1]
    for mode in ("streaming", "h2o"):
        assert "50.0% asked" in final[STATS[mode]] and "reached" in final[STATS[mode]]
    header = final[TABLE]["headers"]
    rows = {row[0]: dict(zip(header, row)) for row in final[TABLE]["data"]}
    assert abs(rows["h2o"]["KV share reached"] - 0.5) <= 0.015 and rows["h2o"]["KV share asked"] == 0.5


def test_stop_ends_a_generation_early(client, checkpoint):
    job = client.submit(*gen_args(checkpoint, max_new=1024, modes=["baseline"]), api_name="/generate")
    deadline = time.monotonic() + 30
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.predict(api_name="/stop")
    job.result(timeout=30)
    kv = plot_data(job.outputs()[-1][KV_PLOT])
    assert 1 <= len(kv[0]["x"]) < 1024


def test_attention_redraws_from_stored_records(client, checkpoint):
    run(client, *gen_args(checkpoint, max_new=6))
    mode = MODES[-1]
    grid, bars = client.predict(mode, "prefill", 2, "head 1", api_name="/attention")
    assert "head 1" in json.loads(grid["plot"])["layout"]["title"]["text"]
    assert "layer 2" in json.loads(bars["plot"])["layout"]["title"]["text"]
    assert "prompt tokens" in json.loads(bars["plot"])["layout"]["title"]["text"]  # the prefill's record


def test_export_writes_trace_and_figures(client, checkpoint):
    run(client, *gen_args(checkpoint, max_new=6, modes=["baseline", "pyramid"]))
    files = client.predict(api_name="/export")
    names = sorted(p.rsplit("/", 1)[-1] for p in files)
    assert "trace.json" in names and "kv_memory.html" in names and "pyramid.html" in names
    trace = json.loads(open(next(p for p in files if p.endswith("trace.json"))).read())
    assert sorted(trace) == ["baseline", "pyramid"] and len(trace["pyramid"]) == 6
    for records in trace.values():  # the final state in detail, whatever the live view drew
        assert records[-1]["attention"] and records[-1]["kept_positions"]


@pytest.mark.parametrize("overrides, message", [
    (dict(prompt="   "), "prompt is empty"),
    (dict(knobs={("pyramid", "recent_ratio"): 2.0}), "recent_ratio must be in [0, 1]"),
    (dict(temperature=-1.0), "temperature must be from 0 to 10, got -1.0"),  # RunRequest's check, not Gradio's
    (dict(model_id="/no/such/model"), "Could not load the model: no model at /no/such/model"),
    (dict(prompt="the cat " * 600), "more than the model's context of 512"),
    (dict(budget=0.1, modes=["baseline", "snapkv"]), "out of reach for snapkv"),
], ids=["empty-prompt", "bad-knob", "bad-sampling", "unknown-model", "prompt-too-long", "budget-out-of-reach"])
def test_bad_input_gets_its_message_and_the_server_keeps_serving(client, checkpoint, overrides, message):
    pattern = message.replace("[", r"\[").replace("]", r"\]")
    job = client.submit(*gen_args(checkpoint, **overrides), api_name="/generate")
    with pytest.raises(Exception, match=pattern):  # an API client sees the event fail
        job.result(timeout=30)
    if "minimum" not in message:  # Gradio refuses a slider out of bounds before the handler runs
        assert re.search(pattern, html.unescape(job.outputs()[-1][-1])), "the page's message box does not say it"
    final = run(client, *gen_args(checkpoint, max_new=2, modes=["baseline"]))[-1]
    assert "2 tokens" in final[STATS["baseline"]]


def test_compare_api_takes_named_parameters_and_returns_json(client, checkpoint):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/compare"]
    names = [p["parameter_name"] for p in api["parameters"]]
    assert names[:5] == ["prompt", "modes", "budget", "max_new_tokens", "knobs"] and "model_id" in names
    out = client.predict(prompt=PROMPT, modes=["baseline", "streaming"], budget=0.3, max_new_tokens=5,
                         knobs={"streaming": {"sink_len": 2}}, model_id=checkpoint, api_name="/compare")
    base, window = out["modes"]["baseline"], out["modes"]["streaming"]
    for mode in (base, window):
        assert len(mode["token_ids"]) == 5 and isinstance(mode["text"], str) and mode["tokens_per_s"] > 0
    assert base["kv_share_reached"] == 1.0 and base["kv_share_asked"] is None
    assert window["kv_share_asked"] == 0.3 and window["kv_share_reached"] < 0.5
    assert window["kv_bytes"] < base["kv_bytes"] and window["policy"]["sink_len"] == 2
    with pytest.raises(Exception, match="unknown knobs"):
        client.predict(prompt=PROMPT, modes=["pyramid"], knobs={"pyramid": {"nope": 1}}, model_id=checkpoint,
                       api_name="/compare")


def test_chat_template_through_both_endpoints(client, chat_checkpoint):
    """A model with a chat template reads the prompt in it unless chat is off; /generate shows the text
    in the prompt box (its outputs' last but one) and /compare returns it."""
    names = [p["parameter_name"] for p in client.view_api(return_format="dict", print_info=False)
             ["named_endpoints"]["/generate"]["parameters"]]
    assert names[-1] == "chat" and names[-2].startswith("pyramid_recurformer__")  # after the knobs
    shown = {chat: run(client, *gen_args(chat_checkpoint, prompt="the cat", max_new=2, modes=["baseline"],
                                         chat=chat))[-1][-2] for chat in (True, False)}
    assert shown == {True: "<|bos|><|user|>the cat\n<|assistant|>", False: "the cat"}
    common = dict(prompt="the cat", modes=["baseline"], max_new_tokens=2, model_id=chat_checkpoint, api_name="/compare")
    templated, raw = client.predict(**common), client.predict(**common, chat=False)
    assert (templated["model_prompt"], raw["model_prompt"]) == (shown[True], shown[False])
    assert templated["prompt_tokens"] > raw["prompt_tokens"]


def test_max_new_tokens_past_the_context_are_clamped_with_a_notice(client, checkpoint):
    prompt = "the cat sat on the mat " * 20  # the tiny model's context is 512 tokens
    final = run(client, *gen_args(checkpoint, prompt=prompt, max_new=500, modes=["baseline"]))[-1]
    notice = final[-1]
    room = int(re.search(r"clamped to (\d+)", notice).group(1))
    assert 0 < room < 500 and f"{room} tokens" in final[STATS["baseline"]]


def test_stop_and_budget_are_said_in_the_pane(client, checkpoint):
    job = client.submit(*gen_args(checkpoint, max_new=1024, modes=["baseline", "streaming"], budget=0.3),
                        api_name="/generate")
    deadline = time.monotonic() + 30
    while len(job.outputs()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.predict(api_name="/stop")
    job.result(timeout=30)
    stats = job.outputs()[-1][STATS["streaming"]]
    assert re.search(r"stopped at token \d+", stats) and "tokens/s" in stats
    assert re.search(r"KV share \*\*\d+\.\d%\*\* reached \(30\.0% asked\)", stats)


def test_recency_on_a_short_prompt_says_what_it_needs(client, checkpoint):
    short = json.loads(client.predict(checkpoint, "the cat sat", "", api_name="/recency")["plot"])
    assert "at least 12 tokens" in short["layout"]["annotations"][0]["text"]
    few = json.loads(client.predict(checkpoint, "the cat sat on the mat and a dog ran", "", api_name="/recency")["plot"])
    assert few["data"][0]["type"] == "heatmap"


def test_recency_marks_the_heads_the_adapter_replaces(client, checkpoint, adapter):
    """The adapter replaces KV group 0 of layer 1: its query heads (2 per group here) get the marks."""
    figure = json.loads(client.predict(checkpoint, PROMPT, adapter, api_name="/recency")["plot"])
    heatmap, marks = figure["data"]
    assert len(heatmap["z"]) == 4 and len(heatmap["z"][0]) == 4  # layers x query heads of the tiny model
    assert sorted(zip(marks["y"], marks["x"])) == [(1, 0), (1, 1)]
    # the shipped adapter was made for the embedded model: nothing is marked on the tiny one
    figure = json.loads(client.predict(checkpoint, PROMPT, "", api_name="/recency")["plot"])
    assert len(figure["data"]) == 1
    assert "Replaced heads not marked" in figure["layout"]["title"]["text"]  # said in the figure itself


# ----------------------------------------------------------------------------- handlers as functions


def test_recency_says_an_unexpected_failure_in_the_figure(checkpoint, monkeypatch):
    """No error pop-up or badge over the page: the figure's place says what went wrong."""
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(app, "recency_figure", broken)
    figure = json.loads(app.recency_run(checkpoint, PROMPT, "").plot)  # as gr.Plot sends it
    assert "Something went wrong (RuntimeError)" in figure["layout"]["annotations"][0]["text"]




def test_attention_controls_follow_the_model_box(checkpoint):
    """The layer slider and head choices fit the model named in the box, keeping a pick that still fits."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint)
    layer, head, kept_layer, message = app.fit_attention_controls(checkpoint, 99, "head 1", "layer 7")
    assert layer["maximum"] == config.num_hidden_layers - 1 and layer["value"] == config.num_hidden_layers - 1
    assert head["choices"][0] == MEAN_HEAD and len(head["choices"]) == 1 + config.num_attention_heads
    assert head["value"] == "head 1"
    assert len(kept_layer["choices"]) == 1 + config.num_hidden_layers and kept_layer["value"] == ALL_LAYERS
    _, head, _, _ = app.fit_attention_controls(checkpoint, 0, f"head {config.num_attention_heads}")
    assert head["value"] == MEAN_HEAD
    assert message == ""
    *controls, message = app.fit_attention_controls("no/such-model", 0, MEAN_HEAD)
    assert "Could not load the model" in message and all(not is_value(c) for c in controls)


def test_panes_and_attention_modes_follow_the_selection():
    *panes, attn = app.show_panes(["pyramid", "baseline"], "pyramid")
    assert [p["visible"] for p in panes] == [m in ("baseline", "pyramid") for m in MODES]
    assert attn["choices"] == ["baseline", "pyramid"] and attn["value"] == "pyramid"  # the pick is kept
    *panes, attn = app.show_panes(["baseline"], "pyramid")
    assert attn["value"] == "baseline"
    *panes, attn = app.show_panes([], "pyramid")
    assert not any(p["visible"] for p in panes) and attn["choices"] == list(MODES)


def test_export_before_generating_is_refused():
    with pytest.raises(gr.Error, match="generate first"):
        app.export_run({})


def test_generate_sends_what_gradios_postprocess_would(checkpoint):
    """The generate event skips Gradio's postprocess, which ran each of its ~25 outputs on a worker thread
    of its own (on a GPU every hand-off waited for the torch thread's GIL: updates arrived ~1 s late).
    So every value the handler yields must already be what the page's own component would make of it."""
    demo = app.build_ui()
    event = next(fn for fn in demo.fns.values() if fn.api_name == "generate")
    assert event.postprocess is False
    outputs = list(app.generate_run(None, *gen_args(checkpoint, max_new=8, modes=["baseline", "pyramid"])))
    checked = set()
    for output in outputs:
        for component, value in zip(event.outputs, output, strict=True):
            if is_update(value) or component.stateful:
                continue
            if isinstance(component, gr.Dataframe):  # a table goes out as DataframeData, the page's headers
                assert isinstance(value, gr.components.dataframe.DataframeData)
                assert value == component.postprocess(value.data)
            else:
                assert component.postprocess(value) == value, type(component).__name__
            checked.add(type(component).__name__)
    assert checked == {"HTML", "Markdown", "Plot", "Dataframe", "Code"}


def test_generation_runs_on_the_torch_thread_whichever_thread_asks(checkpoint, monkeypatch):
    """Gradio calls a handler from a pool of threads; the engine's steps must all run on one thread
    (studio/torch_thread.py says why) that is none of the callers'."""
    steppers, callers = set(), set()
    compare = stream.compare

    def watched(*args, **kwargs):
        for item in compare(*args, **kwargs):
            steppers.add(threading.get_ident())
            yield item

    monkeypatch.setattr(stream, "compare", watched)

    def handler():
        callers.add(threading.get_ident())
        for _ in app.generate_run(None, *gen_args(checkpoint, max_new=8, modes=["baseline", "pyramid"])):
            pass

    threads = [threading.Thread(target=handler) for _ in range(2)]  # alive together: their idents differ
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(callers) == 2 and len(steppers) == 1 and not steppers & callers


def test_the_queue_polls_slowly_while_a_job_runs_and_gradio_still_reads_those_settings():
    """quiet_queue sets attributes of Gradio's queue, not public settings: if Gradio renames them, the
    polling goes back to every millisecond (~10% of a CPU run) without an error. This catches it. While
    no job runs the queue polls every IDLE_POLL_S, so a new request starts at once."""
    import inspect

    from gradio import queueing

    queue = app.build_ui()._queue
    queue.active_jobs = [None, None]
    assert queue.sleep_when_free == IDLE_POLL_S < QUEUE_POLL_S["sleep_when_free"]
    queue.active_jobs = [None, ["a running job's events"]]
    for name, seconds in QUEUE_POLL_S.items():
        assert getattr(queue, name) == seconds
        assert f"asyncio.sleep(self.{name})" in inspect.getsource(queueing.Queue), f"Gradio no longer reads {name}"
