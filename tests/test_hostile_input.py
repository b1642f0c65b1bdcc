"""Hostile input, property-based: text of every Unicode plane with control, zero-width and right-to-left
characters, prompts around the context, every number at, past and far outside its bounds, NaN,
infinities and wrong types, through the app's generate handler, its server and the CLI. Each call ends
in output or one sentence (never "Something went wrong", the message for a bug), and the server keeps
serving. Few examples and a tiny model keep this to seconds of CPU."""

from types import SimpleNamespace

import gradio as gr
import pytest
from gradio_client import Client
from hypothesis import HealthCheck, given, settings, strategies as st

import app
from pyramid_core.cli import main
from tests.test_app import STATS, gen_args, server  # noqa: F401 (server is a fixture)

FEW = settings(max_examples=6, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SPECIAL = ["\u200b", "\u200c", "\u200d", "\ufeff", "\u202e", "\u2067", "\x00", "\x1b[2J", "\x7f", "\r\n",
           "שלום עולם", "مرحبا بالعالم", "\U0001F600", "\U00020000", "\U000E0001", "\U0010FFFD", "<script>"]
prompts = st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(st.characters(), max_size=8),
                             st.text(st.characters(min_codepoint=0x10000), max_size=4)),
                   min_size=1, max_size=6).map("".join)
# around the tiny model's 512-token context: "the cat " is about three tokens
long_prompts = st.integers(160, 200).map(lambda n: "the cat " * n)
junk = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20),
                 st.sampled_from([0, 1, -1, 1024, 1025, 2, 10, 10.5, "", "nan", "abc", None, True, [1], {"a": 1}]))
FIELDS = ["budget", "temperature", "top_p", "seed", "max_new_tokens", "layer"]


def output_or_a_sentence(checkpoint, **form) -> str:
    """'output' when the run ended with its panes, else the one-sentence error it gave."""
    try:
        outputs = list(app.generate_run(SimpleNamespace(session_hash="hostile"), *gen_args(checkpoint, **form)))
        assert outputs and "tokens" in outputs[-1][STATS["baseline"]]
        return "output"
    except gr.Error as err:
        assert err.message and "\n" not in err.message, err.message
        assert not err.message.startswith("Something went wrong"), err.message
        return err.message


@FEW
@given(prompt=st.one_of(prompts, long_prompts))
def test_any_prompt_ends_in_output_or_a_sentence(checkpoint, prompt):
    output_or_a_sentence(checkpoint, prompt=prompt, max_new=2, modes=["baseline", "pyramid"])


@FEW
@given(field=st.sampled_from(FIELDS), value=junk)
def test_any_number_ends_in_output_or_a_sentence(checkpoint, field, value):
    form = {"max_new": 2, "modes": ["baseline"], ("max_new" if field == "max_new_tokens" else field): value}
    output_or_a_sentence(checkpoint, **form)


@FEW
@given(knob=st.sampled_from(["recent_ratio", "prefill_decay_ratio", "min_context_length", "sink_len", "prefill_decay_strategy"]), value=junk)
def test_any_knob_ends_in_output_or_a_sentence(checkpoint, knob, value):
    output_or_a_sentence(checkpoint, max_new=2, modes=["baseline", "pyramid"], knobs={("pyramid", knob): value})


@settings(FEW, max_examples=3)
@given(prompt=prompts, value=junk, field=st.sampled_from(FIELDS))
def test_the_server_survives_hostile_calls(server, checkpoint, prompt, value, field):
    client = Client(server, verbose=False)
    form = {"prompt": prompt, "max_new": 2, "modes": ["baseline"]}
    form["max_new" if field == "max_new_tokens" else field] = value
    try:
        client.predict(*gen_args(checkpoint, **form), api_name="/generate")
    except Exception as err:  # Gradio's own checks (slider bounds, types) answer some before we do
        assert "Something went wrong" not in str(err), str(err)
    client.predict(*gen_args(checkpoint, max_new=2, modes=["baseline"]), api_name="/generate")


@FEW
@given(prompt=st.one_of(prompts, long_prompts), new=junk, temperature=junk)
def test_the_cli_ends_in_output_or_an_error_line(checkpoint, capsys, prompt, new, temperature):
    argv = ["generate", "--model", checkpoint, "--prompt", prompt, "--max-new-tokens", str(new),
            "--temperature", str(temperature), "--json"]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refusing a value: its usage line and exit status 2
        code = exit_.code
    err = capsys.readouterr().err
    assert code in (0, 2) and (code == 0 or err.strip()), err
    assert "Traceback" not in err
