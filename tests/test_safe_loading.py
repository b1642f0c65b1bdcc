"""Safe loading: weights only from safetensors, remote code never run, hub ids checked before any
network call. Each test builds the hostile checkpoint it guards against."""

import json
import shutil

import pytest
import torch

from pyramid_core import ModelLoadError, load_model
from pyramid_core import models
from pyramid_core.models import check_hub_id


def pickled_copy(checkpoint, dest, keep_safetensors_named=None):
    """The checkpoint with its weights as a pickled pytorch_model.bin instead of safetensors."""
    shutil.copytree(checkpoint, dest)
    lm = load_model(str(checkpoint), device="cpu")
    for f in dest.glob("*.safetensors"):
        f.unlink()
    torch.save(lm.model.state_dict(), dest / "pytorch_model.bin")
    if keep_safetensors_named:  # a safetensors file that is not the model's weights
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(1)}, dest / keep_safetensors_named)
    return dest


def test_pickled_weights_are_refused_with_a_sentence(checkpoint, tmp_path):
    path = pickled_copy(checkpoint, tmp_path / "pickled")
    with pytest.raises(ModelLoadError, match="pytorch_model.bin, pickled weights that are never loaded"):
        load_model(str(path), device="cpu")


def test_transformers_is_told_safetensors_only(checkpoint, tmp_path):
    """A stray .safetensors file gets past our own check: transformers must still refuse the .bin
    (use_safetensors=True) rather than unpickle it."""
    path = pickled_copy(checkpoint, tmp_path / "stray", keep_safetensors_named="extra.safetensors")
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(str(path), device="cpu")


def test_remote_code_in_a_checkpoint_is_never_run(checkpoint, tmp_path):
    """A checkpoint whose config maps the Auto classes to its own module: trusting it would import that
    module, which here leaves a marker file."""
    path = shutil.copytree(checkpoint, tmp_path / "remote-code")
    marker = tmp_path / "code-ran"
    (path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                  "from transformers import LlamaConfig as EvilConfig, "
                                  "LlamaForCausalLM as EvilModel\n")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (path / "config.json").write_text(json.dumps(config))
    lm = load_model(str(path), device="cpu")
    assert not marker.exists()
    assert type(lm.model).__module__.startswith("transformers.")


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-0.5B", "gpt2", "a_b/c.d-e", "o/" + "n" * 96])
def test_valid_hub_ids_pass(name):
    assert check_hub_id(name) == name


@pytest.mark.parametrize("name", ["a/b/c", "owner/", "/name", "-lead/x", "x/trail.", "a--b/c", "a/b..c",
                                  "o/" + "n" * 97, "ünïcode/name", "name with space", "o/n\x00", "", 3])
def test_bad_hub_ids_are_refused_before_any_network_call(name, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a bad hub id reached transformers")

    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", no_network)
    with pytest.raises(ModelLoadError, match="not a valid hub id|named by a string|no model at"):
        models.load_config(name)
