"""The worked example of docs/policies.md: a policy that keeps each row's first n tokens and its newest."""

import pytest
import torch

from pyramid_core import generate
from pyramid_core.policies.keep_first import KeepFirstPolicy
from tests.tiny_models import tiny_model


def test_every_layer_holds_the_first_n_and_the_newest_token():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (1, 30), generator=torch.Generator().manual_seed(0))
    records = list(generate(lm, ids, policy=KeepFirstPolicy(n=5), max_new_tokens=6, record_positions=True))
    for record in records:
        newest = record.seen_tokens - 1
        assert record.kept_positions == [[0, 1, 2, 3, 4, newest]] * len(record.kept_positions)
    assert records[-1].kv_bytes < list(generate(lm, ids, max_new_tokens=6))[-1].kv_bytes


def test_left_padded_rows_keep_their_own_first_tokens():
    lm = tiny_model("llama")
    ids = torch.randint(3, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # row 1 has 13 real tokens
    first = next(generate(lm, ids, attention_mask=mask, policy=KeepFirstPolicy(n=3), max_new_tokens=1))
    assert first.kept_tokens_per_row == [[4] * 4, [4] * 4]


def test_n_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="n must be"):
        KeepFirstPolicy(n=0)
