"""Loading: local checkpoints, supported families, and the errors users see."""

import json

import pytest
import torch

from pyramid_core import ModelLoadError, load_model
from pyramid_core.cli import main
from tests.tiny_models import save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny qwen2 checkpoint without an EOS: random weights may sample it at any step (which step
    depends on how the tiny tokenizer's BPE training breaks ties), and the tests count tokens."""
    from transformers import GenerationConfig

    path = save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), "qwen2")
    config = GenerationConfig.from_pretrained(path)
    config.eos_token_id = None
    config.save_pretrained(path)
    return path


def test_local_checkpoint_loads_and_generates(checkpoint):
    lm = load_model(str(checkpoint), device="cpu")
    assert lm.family == "qwen2" and lm.dtype == torch.float32
    ids = lm.tokenizer("the cat", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = lm.model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    from pyramid_core import generate

    assert [r.token_ids[0] for r in generate(lm, ids, max_new_tokens=6)] == ref[0, ids.shape[1]:].tolist()


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no model at"):
        load_model(str(tmp_path / "nothing-here"))


def test_unsupported_architecture_names_supported_families(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="llama, mistral, qwen2, qwen3"):
        load_model(str(tmp_path))


def test_unreachable_hub_id_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="cannot load 'nobody/no-such-model'"):
        load_model("nobody/no-such-model")


def test_cli_json_report(checkpoint, capsys):
    assert main(["generate", "--model", str(checkpoint), "--prompt", "the cat sat", "--json",
                 "--max-new-tokens", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["token_ids"]) == 5 and out["prompt_tokens"] > 0
    n = out["prompt_tokens"]
    assert out["prefill_kv_tokens"] == [n] * 4 and out["final_kv_tokens"] == [n + 4] * 4
    assert out["kv_bytes"] > 0 and out["peak_kv_bytes"] >= out["kv_bytes"] and out["tokens_per_s"] > 0


def test_cli_error_is_a_sentence_not_a_traceback(capsys):
    assert main(["generate", "--model", "/no/such/dir", "--prompt", "x"]) == 2
    assert "error: no model at" in capsys.readouterr().err
