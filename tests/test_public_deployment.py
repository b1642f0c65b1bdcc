"""The public-deployment switch: on a Space (SPACE_ID) or with PYRAMID_PUBLIC=1 the model box refuses
paths on the server and the adapter knob anything but the shipped adapter; plainly, both are served."""

import pytest

from pyramid_core import ModelLoadError
from studio import deployment, model_cache
from studio.recency import recency_figure
from studio.picker import PICKER_MODELS
from studio.request import RunRequest
from tests.test_studio import form as form_values


@pytest.fixture()
def plain(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv(deployment.PUBLIC_ENV, raising=False)


@pytest.fixture()
def on_a_space(plain, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/kv-studio")


@pytest.mark.parametrize("env, expected", [({}, False), ({"SPACE_ID": "a/b"}, True),
                                           ({"PYRAMID_PUBLIC": "1"}, True),
                                           ({"SPACE_ID": "a/b", "PYRAMID_PUBLIC": "0"}, False),
                                           ({"SPACE_ID": "a/b", "PYRAMID_PUBLIC": "off"}, False)])
def test_the_switch_follows_the_environment(plain, monkeypatch, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert deployment.public() is expected


def test_a_local_directory_loads_plainly_and_is_refused_on_a_space(plain, checkpoint, monkeypatch):
    assert model_cache.model_config(checkpoint).num_hidden_layers == 4
    monkeypatch.setenv("SPACE_ID", "someone/kv-studio")
    for name in (checkpoint, "./tests", "~", "/etc"):
        with pytest.raises(ModelLoadError, match="hub only, not from the server's disk"):
            model_cache.get_model(name)


def test_on_a_space_hub_ids_are_checked_and_the_picker_list_passes(on_a_space):
    with pytest.raises(ModelLoadError, match="not a valid hub id"):
        model_cache.model_key("a/b/c")
    assert model_cache.model_key("Qwen/Qwen2.5-0.5B")[0] == "Qwen/Qwen2.5-0.5B"
    assert model_cache.model_key("")[0] == "embedded"
    assert model_cache.model_key("embedded")[0] == "embedded"


@pytest.mark.parametrize("name", PICKER_MODELS)
def test_on_a_space_every_picker_model_passes(on_a_space, name):
    assert model_cache.model_key(name)[0] == name


def test_on_a_space_the_adapter_knob_takes_only_the_shipped_adapter(on_a_space, tmp_path):
    knobs = {("recurformer", "adapter"): str(tmp_path)}
    with pytest.raises(ValueError, match="shipped RecurFormer adapter only"):
        RunRequest.from_form(form_values(modes=["recurformer"], knobs=knobs))
    with pytest.raises(ValueError, match="shipped RecurFormer adapter only"):
        recency_figure(None, "hello", str(tmp_path))
    assert RunRequest.from_form(form_values(modes=["recurformer"])).modes == ("recurformer",)
