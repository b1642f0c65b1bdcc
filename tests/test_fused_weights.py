"""q/k/v and gate/up as one weight each (fused_weights.py): the modules' parameters become views of it, with
the same values; the engine runs one matmul for each; its tokens are those of the unfused model; a model
moved after fusing is fused again; what cannot share one tensor is left alone."""

import pytest
import torch

from pyramid_core import fused_weights, generate
from pyramid_core.layers import model_parts, project_qkv
from pyramid_core.recurrent_groups import layer_heads
from tests.tiny_models import tiny_model

FAMILIES = ["llama", "qwen2", "qwen3"]  # plain; q/k/v biases; q/k norms and head_dim != hidden / heads


def storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_modules_become_views_of_one_weight_with_their_values(family):
    lm = tiny_model(family)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    ids = torch.randint(3, 97, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = lm.model(ids).logits
    parts = model_parts(lm)
    for layer, fusion in zip(lm.model.model.layers, parts.fused):
        attn, mlp = layer.self_attn, layer.mlp
        assert len({storage(m.weight) for m in (attn.q_proj, attn.k_proj, attn.v_proj)}) == 1
        assert len({storage(m.weight) for m in (mlp.gate_proj, mlp.up_proj)}) == 1
        assert storage(attn.q_proj.weight) == storage(fusion.qkv.weight)
        if family == "qwen2":
            assert storage(attn.k_proj.bias) == storage(fusion.qkv.bias)
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, logits)  # the model's own forward reads the same values


@pytest.mark.parametrize("family", FAMILIES)
def test_one_matmul_gives_what_the_three_projections_give(family):
    lm = tiny_model(family)
    fusion = model_parts(lm).fused[1]
    attn = lm.model.model.layers[1].self_attn
    x = torch.randn(3, 5, lm.config.hidden_size)
    fused, plain = project_qkv(attn, x, attn.head_dim, fusion.qkv), project_qkv(attn, x, attn.head_dim)
    for a, b in zip(fused, plain):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_kept_heads_come_out_of_one_gather_as_the_modules_own(family):
    """RecurFormer drops the replaced groups' heads: the fused path gathers the kept heads of q, k and v at
    once; each must be the head its own module computes (a k head taken for a v head would not show in
    the shapes)."""
    lm = tiny_model(family, num_attention_heads=8, num_key_value_heads=4)
    fusion = model_parts(lm).fused[1]
    attn, D = lm.model.model.layers[1].self_attn, lm.model.model.layers[1].self_attn.head_dim
    heads = layer_heads(4, 8, 4, {1: {0: None, 2: None}}, "cpu", stack=False)[1]  # groups 1 and 3 stay
    x = torch.randn(3, 5, lm.config.hidden_size)
    q, k, v = project_qkv(attn, x, D, fusion.qkv, heads)
    with torch.no_grad():
        own = [m(x).view(3, 5, -1, D).transpose(1, 2) for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    if family == "qwen3":  # the norms act per head, on every head alike
        own[0], own[1] = attn.q_norm(own[0]), attn.k_norm(own[1])
    torch.testing.assert_close(q, own[0][:, [2, 3, 6, 7]], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(k, own[1][:, [1, 3]], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(v, own[2][:, [1, 3]], atol=1e-6, rtol=1e-6)
    unfused = project_qkv(attn, x, D, None, heads)
    for a, b in zip((q, k, v), unfused):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("family", FAMILIES)
def test_the_engine_runs_the_fused_matmuls_and_decodes_the_same_tokens(family, device, monkeypatch):
    lm = tiny_model(family)
    lm.model.to(device)
    ids = torch.randint(3, 97, (2, 17), generator=torch.Generator().manual_seed(2)).to(device)
    calls = []
    output = fused_weights.Fused.output
    monkeypatch.setattr(fused_weights.Fused, "output", lambda self, x: calls.append(1) or output(self, x))

    def tokens(graphs):
        return [r.token_ids for r in generate(lm, ids, max_new_tokens=12, cuda_graphs=graphs)]
    graphed = tokens(None)  # the default: on a GPU, graphs replay the fused matmuls without calling Python
    calls.clear()
    eager = tokens(False)
    assert len(calls) == 12 * 4 * 2  # every step (the prefill included): two per layer
    monkeypatch.setattr("pyramid_core.layers.fused_layers", lambda lm: [])
    assert tokens(False) == eager and tokens(None) == graphed


def test_a_model_moved_after_fusing_is_fused_again():
    lm = tiny_model("llama")
    first = model_parts(lm).fused
    assert model_parts(lm).fused is first  # nothing moved: the same fusion
    lm.model.to(torch.float64)
    again = model_parts(lm).fused
    assert again is not first and again[0].qkv.weight.dtype == torch.float64
    attn = lm.model.model.layers[0].self_attn
    assert storage(attn.v_proj.weight) == storage(again[0].qkv.weight)


def test_what_cannot_share_one_tensor_is_left_alone(monkeypatch):
    lm = tiny_model("llama")
    attn = lm.model.model.layers[0].self_attn
    attn.k_proj.to(torch.float64)  # one weight of another dtype
    assert fused_weights.fuse((attn.q_proj, attn.k_proj, attn.v_proj)) is None
    assert len({storage(m.weight) for m in (attn.q_proj, attn.v_proj)}) == 2  # untouched
    mlp = lm.model.model.layers[1].mlp
    del mlp.gate_proj  # not a gated MLP
    assert fused_weights.fuse_layer(lm.model.model.layers[1]).gate_up is None
    spread = type("Spread", (), {"spans_devices": True})()
    monkeypatch.setattr(type(lm), "placement", property(lambda self: spread))
    assert fused_weights.fused_layers(lm) == []


def test_a_fused_model_saves_and_loads_with_its_values(tmp_path):
    """save_pretrained writes views of one tensor as separate tensors (transformers clones disjoint ones)."""
    from transformers import AutoModelForCausalLM

    lm = tiny_model("qwen2")
    assert model_parts(lm).fused[0].qkv is not None
    lm.model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in lm.model.state_dict().items())


@pytest.mark.parametrize("act, silu", [("silu", True), ("gelu_pytorch_tanh", False)])
def test_the_mlp_applies_the_models_own_activation(act, silu):
    """SiLU meets up in one kernel (kernels/silu_mul.py; torch's two ops on a CPU); another activation is the
    module's own. Either way the engine's logits are the model's."""
    from pyramid_core.engine import teacher_forced_logits

    lm = tiny_model("llama", hidden_act=act)
    assert model_parts(lm).fused[0].silu is silu
    ids = torch.randint(3, 97, (2, 30), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = lm.model(ids).logits
    torch.testing.assert_close(teacher_forced_logits(lm, ids[:, :20], ids[:, 20:]), ref[:, 19:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family, act", [("llama", "silu"), ("llama", "gelu_pytorch_tanh"), ("qwen2", "silu")])
def test_a_long_prefills_mlp_runs_in_chunks_with_the_same_logits(family, act, monkeypatch):
    """Past MLP_CHUNK_TOKENS tokens (rows x length) a prefill's MLP runs a chunk at a time, so its intermediates
    stay small; the MLP works token by token, so the logits are the unchunked ones."""
    from pyramid_core import layers
    from pyramid_core.engine import teacher_forced_logits

    lm = tiny_model(family, hidden_act=act)
    ids = torch.randint(3, 97, (3, 40), generator=torch.Generator().manual_seed(5))
    whole = teacher_forced_logits(lm, ids[:, :30], ids[:, 30:])
    sizes = []
    mlp = layers.mlp
    monkeypatch.setattr(layers, "mlp", lambda parts, idx, x: sizes.append(x.shape[:-1].numel()) or mlp(parts, idx, x))
    monkeypatch.setattr(layers, "MLP_CHUNK_TOKENS", 16)
    chunked = teacher_forced_logits(lm, ids[:, :30], ids[:, 30:])
    assert sizes[:6] == [16] * 5 + [10]  # the prefill's first layer: 90 tokens in chunks of 16
    assert all(size == 3 for size in sizes[6 * lm.config.num_hidden_layers:])  # decode steps: one chunk
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
