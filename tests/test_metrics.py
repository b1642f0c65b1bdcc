"""The figures measured from trace records (pyramid_core/metrics.py), on hand-made values."""

import pytest

from pyramid_core.metrics import greedy_agreement, kv_share
from pyramid_core.trace import StepRecord


@pytest.mark.parametrize("tokens, reference, expected", [
    ([1, 2, 3, 4], [1, 2, 3, 4], (1.0, 1.0)),
    ([1, 2, 9, 4], [1, 2, 3, 4], (0.5, 0.75)),
    ([9, 2, 3, 4], [1, 2, 3, 4], (0.0, 0.75)),
    ([1, 2], [1, 2, 3, 4], (0.5, 0.5)),  # missing positions count as different
])
def test_greedy_agreement(tokens, reference, expected):
    assert greedy_agreement(tokens, reference) == expected


def test_greedy_agreement_rejects_an_empty_reference():
    with pytest.raises(ValueError, match="empty"):
        greedy_agreement([1], [])


def test_kv_share_of_a_hand_made_record():
    record = StepRecord(step=0, phase="prefill", token_ids=[5], finished=[False], kept_tokens=[10, 5, 5],
                        kept_tokens_per_row=[[10, 5, 5]], kv_bytes=0, peak_kv_bytes=0, step_time_s=0.0,
                        seen_tokens=10)
    assert kv_share(record) == pytest.approx((1.0 + 0.5 + 0.5) / 3)
