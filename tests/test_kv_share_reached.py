"""The share of KV reached over a generation and the evictions, measured from hand-made trace records
(pyramid_core/metrics.py: row_kv_share, generation_kv_share, evictions)."""

import pytest

from pyramid_core.metrics import evictions, generation_kv_share, row_kv_share
from pyramid_core.trace import StepRecord


def record(step: int, per_row: list[list[int]], finished: list[bool], seen: int) -> StepRecord:
    return StepRecord(step=step, phase="prefill" if step == 0 else "decode", token_ids=[5] * len(per_row),
                      finished=finished, kept_tokens=per_row[0], kept_tokens_per_row=per_row, kv_bytes=0,
                      peak_kv_bytes=0, step_time_s=0.0, seen_tokens=seen)


# two rows, two layers; row 0 has a 10-token prompt, row 1 (left-padded) a 6-token one and stops at step 1
RUN = [
    record(0, [[10, 5], [6, 3]], [False, False], 10),
    record(1, [[11, 6], [7, 4]], [False, True], 11),
    record(2, [[12, 4], [8, 5]], [True, True], 12),  # layer 1 of row 0 dropped 3 tokens here
]


def test_row_share_uses_the_rows_own_length_and_the_groups_held():
    assert row_kv_share(RUN[0], 1, 6) == pytest.approx((6 / 6 + 3 / 6) / 2)
    # a layer with half its KV groups replaced by recurrences holds half its share per token
    assert row_kv_share(RUN[0], 0, 10, held_groups=[1.0, 0.5]) == pytest.approx((10 / 10 + 0.5 * 5 / 10) / 2)


def test_generation_share_averages_the_steps_up_to_the_rows_end():
    row0 = [(10 / 10 + 5 / 10) / 2, (11 / 11 + 6 / 11) / 2, (12 / 12 + 4 / 12) / 2]
    assert generation_kv_share(RUN, 0) == pytest.approx(sum(row0) / 3)
    row1 = [(6 / 6 + 3 / 6) / 2, (7 / 7 + 4 / 7) / 2]  # step 2 is padding after its end: not counted
    assert generation_kv_share(RUN, 1, prompt_tokens=6) == pytest.approx(sum(row1) / 2)


def test_a_cache_that_only_grows_has_the_full_share_and_no_evictions():
    full = [record(i, [[8 + i, 8 + i]], [i == 3], 8 + i) for i in range(4)]
    assert generation_kv_share(full) == pytest.approx(1.0)
    assert evictions(full) == [[], [], []]


def test_evictions_name_the_steps_and_layers_that_lost_tokens():
    assert evictions(RUN, 0) == [[], [1]]
    assert evictions(RUN, 1) == [[], []]  # row 1 only grew


def test_shares_reject_bad_input():
    with pytest.raises(ValueError, match="no tokens"):
        row_kv_share(RUN[0], 0, 0)
    with pytest.raises(ValueError, match="layers"):
        row_kv_share(RUN[0], 0, 10, held_groups=[1.0])
