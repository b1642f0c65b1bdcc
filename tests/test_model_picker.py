"""The model box: a dropdown of the picker's models that also takes a typed hub id or directory."""

import gradio as gr
import pytest

import app
from pyramid_core.models import EMBEDDED_NAME
from studio.picker import PICKER, PICKER_MODELS

HUB_MODELS = ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen3-0.6B",
              "meta-llama/Llama-3.2-1B-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct")


@pytest.fixture(scope="module")
def model_box():
    demo = app.build_ui()
    return next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model")


def test_the_picker_offers_the_embedded_model_first_and_the_hub_models():
    assert PICKER_MODELS[0] == EMBEDDED_NAME and set(PICKER_MODELS) == {EMBEDDED_NAME, *HUB_MODELS}
    for name, label in PICKER.items():  # each label says the model's size
        assert any(c.isdigit() for c in label) and label.split(":")[0] in name


def test_the_model_box_lists_the_picker_with_labels_and_starts_on_the_default(model_box):
    assert [value for _, value in model_box.choices] == list(PICKER_MODELS)
    assert [label for label, _ in model_box.choices] == list(PICKER.values())
    assert model_box.value == app.DEFAULT_MODEL


def test_the_model_box_takes_a_typed_hub_id_or_directory(model_box):
    assert model_box.allow_custom_value
    for typed in ("someone/their-model", "/models/mine"):
        assert model_box.preprocess(typed) == typed
