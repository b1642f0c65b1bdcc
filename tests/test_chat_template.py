"""Instruct models read the prompt in their tokenizer's chat template (pyramid_core/prompting.py): in the
library, the CLI and the studio; a model without a template (the embedded one) reads the raw text."""

import json
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

import app
from pyramid_core import load_model, pipeline
from pyramid_core.cli import main
from pyramid_core.engine import Sampling
from pyramid_core.policies.full import FullPolicy
from pyramid_core.prompting import model_text, prompt_ids
from pyramid_core.resources import asset
from studio.request import RunRequest
from tests.test_studio import form

PROMPT = "the cat sat on the mat"
PROMPT_BOX = -2  # /generate's outputs end with the prompt box, then the message box


@pytest.fixture(scope="module")
def chat_tokenizer(chat_checkpoint):
    return AutoTokenizer.from_pretrained(chat_checkpoint)


def templated_ids(tokenizer, prompt=PROMPT) -> list[int]:
    """The ids transformers itself makes of one user turn (it tokenizes its template's text as it is)."""
    out = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    return list(out["input_ids"] if "input_ids" in out else out)


def test_chat_on_wraps_the_prompt_in_the_template_with_one_bos(chat_tokenizer):
    text = model_text(chat_tokenizer, PROMPT, chat=True)
    assert text == f"{chat_tokenizer.bos_token}<|user|>{PROMPT}\n<|assistant|>"
    ids = prompt_ids(chat_tokenizer, PROMPT, chat=True)[0].tolist()
    assert ids == templated_ids(chat_tokenizer)
    assert ids.count(chat_tokenizer.bos_token_id) == 1 and ids[0] == chat_tokenizer.bos_token_id


def test_chat_off_sends_the_raw_text(chat_tokenizer):
    assert model_text(chat_tokenizer, PROMPT, chat=False) == PROMPT
    assert prompt_ids(chat_tokenizer, PROMPT, chat=False)[0].tolist() == chat_tokenizer(PROMPT).input_ids


def test_the_embedded_model_has_no_template_and_reads_the_raw_text_either_way():
    tokenizer = AutoTokenizer.from_pretrained(asset("embedded"))
    assert tokenizer.chat_template is None
    raw = tokenizer(PROMPT).input_ids
    for chat in (True, False):
        assert model_text(tokenizer, PROMPT, chat) == PROMPT
        assert prompt_ids(tokenizer, PROMPT, chat)[0].tolist() == raw


@pytest.mark.parametrize("chat", [True, False])
def test_the_engine_gets_the_ids_chat_asks_for(chat_checkpoint, chat_tokenizer, monkeypatch, chat):
    seen = []

    def spy(lm, input_ids, **kwargs):
        seen.append(input_ids[0].tolist())
        return iter(())

    monkeypatch.setattr(pipeline, "generate", spy)
    lm = load_model(chat_checkpoint, device="cpu")
    list(pipeline.stream_generation(lm, PROMPT, FullPolicy(), 2, Sampling(), chat=chat))
    assert seen == [templated_ids(chat_tokenizer) if chat else chat_tokenizer(PROMPT).input_ids]


@pytest.mark.parametrize("flag", [[], ["--chat"], ["--no-chat"]])
def test_cli_chat_flag(chat_checkpoint, chat_tokenizer, capsys, flag):
    assert main(["generate", "--model", chat_checkpoint, "--prompt", PROMPT, "--json", "--max-new-tokens", "2",
                 *flag]) == 0
    out = json.loads(capsys.readouterr().out)
    raw = flag == ["--no-chat"]
    expected = chat_tokenizer(PROMPT).input_ids if raw else templated_ids(chat_tokenizer)
    assert out["prompt_tokens"] == len(expected) and len(out["token_ids"]) == 2


@pytest.mark.parametrize("chat", [True, False])
def test_the_studio_runs_and_shows_the_prompt_the_model_reads(chat_checkpoint, chat_tokenizer, chat):
    """The prompt box shows the templated text, and the kept-words view's tokens are the template's."""
    values = form(model_id=chat_checkpoint, modes=["baseline"], prompt=PROMPT, max_new_tokens=2, chat=chat)
    assert RunRequest.from_form(values).chat is chat
    final = list(app.generate_run(SimpleNamespace(session_hash="chat"), *values))[-1]
    assert final[PROMPT_BOX] == model_text(chat_tokenizer, PROMPT, chat)
    state = next(o for o in final if isinstance(o, dict) and "tokens" in o)
    ids = templated_ids(chat_tokenizer) if chat else chat_tokenizer(PROMPT).input_ids
    assert state["tokens"]["baseline"][:len(ids)] == [chat_tokenizer.decode([i]) for i in ids]


def test_the_form_takes_chat_as_a_bool_and_none_as_on():
    assert RunRequest.from_form(form(chat=None)).chat is True
    with pytest.raises(ValueError, match="chat must be true or false"):
        RunRequest.from_form(form(chat="yes"))


def test_a_prompt_is_tokenized_once_and_every_caller_gets_its_own_ids(chat_checkpoint, chat_tokenizer, monkeypatch):
    """The studio asks for the same prompt's ids once a mode and again for its checks and its final view."""
    calls = []
    monkeypatch.setattr(pipeline, "prompt_ids", lambda *args: calls.append(args) or prompt_ids(*args))
    lm = load_model(chat_checkpoint, device="cpu")
    first = pipeline.encode_prompt(lm, PROMPT, chat=True)
    first[0, 0] = -1  # a caller's change stays its own
    assert pipeline.encode_prompt(lm, PROMPT, chat=True)[0].tolist() == templated_ids(chat_tokenizer)
    assert len(calls) == 1
    assert pipeline.encode_prompt(lm, PROMPT, chat=False)[0].tolist() == chat_tokenizer(PROMPT).input_ids
    assert pipeline.encode_prompt(lm, PROMPT, chat=True)[0].tolist() == templated_ids(chat_tokenizer)
    assert len(calls) == 3  # the last prompt is kept, not every one
