"""Models spread over devices by a device_map: the per-layer placement, and tokens equal to one device's.

A CPU offers one device only, so here the map's loading path and the placement's bookkeeping are
checked; the split over two GPUs runs in test_split_over_two_gpus_matches_one_gpu (skipped without them).
"""

import dataclasses

import pytest
import torch

from pyramid_core import generate, load_model
from pyramid_core.engine import use_graphs
from pyramid_core.layers import model_parts
from pyramid_core.placement import Placement, follow, module_device, placement_of
from pyramid_core.policies.full import FullPolicy
from pyramid_core.policies.pyramid import PyramidPolicy
from tests.tiny_models import tiny_model

CPU = torch.device("cpu")
LAYERS = 4  # tests/tiny_models.py COMMON


def split_map(first: str, second: str) -> dict:
    """An explicit accelerate map: the embeddings and the first half of the layers on `first`, the rest,
    the final norm and lm_head on `second`."""
    half = LAYERS // 2
    layers = {f"model.layers.{i}": first if i < half else second for i in range(LAYERS)}
    return {"model.embed_tokens": first, "model.rotary_emb": first, **layers, "model.norm": second,
            "lm_head": second}


def greedy(lm, ids, policy, new_tokens=12):
    records = list(generate(lm, ids, policy=policy, max_new_tokens=new_tokens, cuda_graphs=False))
    return [r.token_ids[0] for r in records], records


def compressing_pyramid():
    """PyramidInfer settings that compress a 160-token prompt of the tiny model in the prefill."""
    return PyramidPolicy(min_context_length=8, recent_ratio=0.1, prefill_decay_ratio=0.5)


def prompt(n=160, seed=1):
    return torch.randint(3, 97, (1, n), generator=torch.Generator().manual_seed(seed))


def test_placement_lists_each_layers_device():
    lm = tiny_model("llama")
    placement = placement_of(lm.model)
    assert placement.layers == (CPU,) * LAYERS
    assert (placement.embed, placement.norm, placement.head) == (CPU, CPU, CPU)
    assert not placement.spans_devices and placement.devices == (CPU,)


def test_placement_over_two_gpus_is_seen_as_spanning():
    gpu0, gpu1 = torch.device("cuda", 0), torch.device("cuda", 1)
    placement = Placement(embed=gpu0, layers=(gpu0, gpu0, gpu1, gpu1), norm=gpu1, head=gpu0)
    assert placement.spans_devices and placement.devices == (gpu0, gpu1)


def test_a_layer_split_over_devices_or_offloaded_is_refused():
    lm = tiny_model("llama")
    layer = lm.model.model.layers[1]
    layer.mlp.to("meta")
    with pytest.raises(ValueError, match="layer 1 must sit on one device"):
        placement_of(lm.model)
    layer.to("meta")
    with pytest.raises(ValueError, match="offloaded"):
        module_device(layer, "layer 1")


def test_follow_is_free_on_the_same_device():
    h, pos, rope = torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long), (torch.ones(1), torch.ones(1))
    same = follow(CPU, h, pos, rope)
    assert same[0] is h and same[1] is pos and same[2] is rope


def test_a_model_over_several_devices_decodes_without_graphs():
    parts = model_parts(tiny_model("llama"))
    assert use_graphs(parts, True, CPU)
    gpu0, gpu1 = torch.device("cuda", 0), torch.device("cuda", 1)
    spread = dataclasses.replace(parts, placement=Placement(gpu0, (gpu0, gpu0, gpu1, gpu1), gpu1, gpu1))
    assert not use_graphs(spread, True, gpu0) and not use_graphs(spread, None, gpu0)


@pytest.mark.parametrize("policy", [FullPolicy, compressing_pyramid], ids=["baseline", "pyramid"])
def test_explicit_device_map_loads_and_matches_the_plain_model(checkpoint, policy):
    pytest.importorskip("accelerate")
    plain = load_model(checkpoint, device="cpu")
    mapped = load_model(checkpoint, device_map=split_map("cpu", "cpu"))
    assert mapped.placement.layers == (CPU,) * LAYERS
    ids = prompt()
    tokens, records = greedy(mapped, ids, policy())
    assert tokens == greedy(plain, ids, policy())[0]
    if policy is FullPolicy:  # the engine's tokens are transformers' own
        hf = plain.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
        assert tokens == hf[0, ids.shape[1]:].tolist()
    else:  # the policy did compress, so the comparison covers its scores and kept tokens
        assert records[0].kept_tokens[-1] < ids.shape[1]


def test_the_embeddings_run_under_accelerates_hook_not_through_it():
    """A tied table stays on lm_head's GPU while the map names the first GPU for the embeddings, and
    accelerate's hook would send the ids there (seen on two H200s): the engine runs the table's own
    forward. Here a hook that refuses to run stands for the one that moves ids to the wrong device."""
    from accelerate.hooks import ModelHook, add_hook_to_module

    class Refuse(ModelHook):
        def pre_forward(self, module, *args, **kwargs):
            raise AssertionError("accelerate's hook ran on the embeddings")

    lm = tiny_model("llama")
    ids = prompt(n=24)
    want, _ = greedy(lm, ids, FullPolicy(), new_tokens=4)
    add_hook_to_module(lm.model.model.embed_tokens, Refuse())
    got, _ = greedy(lm, ids, FullPolicy(), new_tokens=4)
    assert got == want


@pytest.fixture(scope="module")
def tied_checkpoint(checkpoint, tmp_path_factory):
    """The tiny checkpoint with lm_head tied to the embeddings (as Llama-3.2-1B's): accelerate then keeps
    the one table on lm_head's device, though the map puts the embeddings on the first GPU. Saved from a
    tied model, so that the file holds one table (a config that only says "tied" over two different
    tables is not tied by transformers)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    tied = tmp_path_factory.mktemp("tied")
    model.save_pretrained(tied)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(tied)
    return str(tied)


def test_the_tied_checkpoint_really_shares_one_table(tied_checkpoint):
    # float32 both: on a GPU machine "auto" would pick bf16 for the mapped one
    lm = load_model(tied_checkpoint, device_map=split_map("cpu", "cpu"), dtype="float32")
    assert lm.model.lm_head.weight.data_ptr() == lm.model.model.embed_tokens.weight.data_ptr()
    plain = load_model(tied_checkpoint, device="cpu", dtype="float32")
    want, _ = greedy(plain, prompt(n=24), FullPolicy(), new_tokens=4)
    got, _ = greedy(lm, prompt(n=24), FullPolicy(), new_tokens=4)
    assert got == want


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("policy", [FullPolicy, compressing_pyramid], ids=["baseline", "pyramid"])
@pytest.mark.parametrize("graphs", [None, False])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_split_over_two_gpus_matches_one_gpu(checkpoint, tied_checkpoint, policy, graphs, tied):
    checkpoint = tied_checkpoint if tied else checkpoint
    one = load_model(checkpoint, device="cuda:0", dtype="float32")
    two = load_model(checkpoint, device_map=split_map(0, 1), dtype="float32")
    placement = two.placement
    assert placement.spans_devices and placement.layers[0] != placement.layers[-1]
    ids = prompt(n=160).repeat(2, 1)  # two rows: the batch dimension crosses the boundary too
    want = [r.token_ids for r in generate(one, ids, policy=policy(), max_new_tokens=12, cuda_graphs=graphs)]
    got = [r.token_ids for r in generate(two, ids, policy=policy(), max_new_tokens=12, cuda_graphs=graphs)]
    assert got == want
