"""Growing a trained model deeper (training/grow_layers.py, train_embedded.py --grow-layers): the grown model
computes the old model's logits, its new layers sit spread over the stack, it saves and loads at its new depth,
and a short training run from it changes the new layers."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training"))
from grow_layers import grow_layers, insert_after  # noqa: E402
from tests.test_train_ddp import data  # noqa: E402,F401  (a fixture: the corpus folder)
from tests.tiny_models import tiny_model  # noqa: E402


@pytest.mark.parametrize("old, extra", [(12, 4), (12, 1), (4, 2), (3, 3)])
def test_new_layers_go_after_distinct_layers_spread_over_the_stack(old, extra):
    after = insert_after(old, extra)
    assert len(set(after)) == extra and all(0 <= i < old for i in after)
    assert max(after) - min(after) >= (extra - 1) * (old // extra)  # not bunched at one end


def test_the_grown_model_computes_the_old_logits_and_saves_at_its_depth(tmp_path):
    model = tiny_model("llama").model
    ids = torch.randint(3, 97, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids).logits
    grow_layers(model, 6)
    assert len(model.model.layers) == 6 and model.config.num_hidden_layers == 6
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(6))
    # one config for every layer, new ones included, so that set_attn_implementation (flex) reaches them all
    assert all(layer.self_attn.config is model.config for layer in model.model.layers)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, atol=1e-6, rtol=1e-6)
        # and with a KV cache, which indexes layers by layer_idx
        out = model.generate(ids[:1], max_new_tokens=5, do_sample=False, pad_token_id=0)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.num_hidden_layers == 6
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, before, atol=1e-6, rtol=1e-6)
        assert torch.equal(loaded.generate(ids[:1], max_new_tokens=5, do_sample=False, pad_token_id=0), out)


def test_training_moves_the_new_layers():
    """Their zeroed output projections get gradients: the grown layers do not stay idle."""
    model = tiny_model("llama").model
    grow_layers(model, 5)
    new = model.model.layers[insert_after(4, 1)[0] + 1]
    ids = torch.randint(3, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    model(ids, labels=ids).loss.backward()
    assert new.self_attn.o_proj.weight.grad.abs().sum() > 0 and new.mlp.down_proj.weight.grad.abs().sum() > 0


def test_a_training_run_grows_its_init(tmp_path, data):
    """train_embedded.py --init --grow-layers: the run trains and saves the deeper model."""
    import json
    import os
    import subprocess

    from tests.test_train_ddp import save_initial_model

    init, out = save_initial_model(tmp_path / "init", data), tmp_path / "out"
    layers = json.loads((init / "config.json").read_text())["num_hidden_layers"]
    cmd = [sys.executable, str(ROOT / "training/train_embedded.py"), "--data", str(data), "--tokenizer",
           str(data / "tokenizer"), "--out", str(out), "--smoke", "--init", str(init), "--grow-layers", str(layers + 1)]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    run = subprocess.run(cmd, cwd=ROOT, env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"grown to {layers + 1} layers" in run.stdout
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == layers + 1
