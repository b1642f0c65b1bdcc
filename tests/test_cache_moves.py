"""LayerCache.moves says whether an answer rewrites the layer's slots; the engine relies on it to make a last
step's attention record after the step (engine.decode_step, detail_last): the slots an answer that does not
move them leaves must read, through `attended`, exactly as the layer attended them."""

import pytest
import torch

from pyramid_core.cache import LayerCache
from pyramid_core.policies.base import Evict, Keep, Window


def filled(tokens: int = 12, batch: int = 2) -> LayerCache:
    layer = LayerCache(batch, 2, 4, torch.float32, torch.device("cpu"), block=8)
    gen = torch.Generator().manual_seed(0)
    keys, values = torch.randn(2, batch, 2, tokens, 4, generator=gen)
    layer.append(keys, values, torch.arange(tokens).repeat(batch, 1), [tokens] * batch)
    return layer


def answers(layer: LayerCache) -> dict:
    B, T = len(layer.counts), layer.length
    scores = torch.rand(B, T, generator=torch.Generator().manual_seed(1))
    return {"keep": Keep(scores[:, -6:], [3] * B), "window": Window(2, [8] * B), "evict": Evict(scores),
            "window keeping all": Window(2, [T] * B), "uneven window": Window(2, [8, 7][:B])}


@pytest.mark.parametrize("name, moves", [("keep", True), ("window", False), ("evict", False),
                                         ("window keeping all", False), ("uneven window", True)])
def test_moves_says_whether_apply_rewrites_what_attended_reads(name, moves):
    layer = filled()
    answer = answers(layer)[name]
    before = [t.clone() for t in layer.attended()]
    said = layer.moves(answer)
    layer.apply(answer)
    after = layer.attended()
    unchanged = all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(before, after))
    assert said == moves and unchanged == (not moves)


def test_attended_leaves_freed_slots_pending():
    """Reading the slots as attended must not turn a ring's or an eviction's freed slots into holes: the next
    token is still written into them."""
    for name in ("window", "evict"):
        layer = filled()
        layer.apply(answers(layer)[name])
        pending = (list(layer.free), layer.evicted)
        layer.attended()
        assert (list(layer.free), layer.evicted) == pending and not layer.has_holes
