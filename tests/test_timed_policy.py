"""A timing wrapper around a policy is that policy: it times the answers and loses nothing else."""

import pytest
import torch

from pyramid_core import generate
from pyramid_core.bench.overhead import TimedPolicy
from pyramid_core.policies import PyramidRecurFormerPolicy, RecurFormerPolicy
from tests.test_recurformer_engine import REPLACED, make_adapter
from tests.tiny_models import tiny_model


def test_a_timed_recurformer_runs_as_recurformer(tmp_path):
    """Regression: TimedPolicy forwarded four methods and inherited the base policy's empty
    recurrent_modules, so a timed RecurFormer ran every group as attention (the baseline)."""
    lm = tiny_model("llama")
    adapter = make_adapter(lm, tmp_path, REPLACED)
    ids = torch.randint(3, 97, (1, 40), generator=torch.Generator().manual_seed(0))
    baseline = list(generate(lm, ids, max_new_tokens=20))
    for policy in (RecurFormerPolicy(adapter=adapter),
                   PyramidRecurFormerPolicy(adapter=adapter, prefill_decay_ratio=0.5, min_context_length=8)):
        timed = TimedPolicy(policy)
        plain = list(generate(lm, ids, policy=policy, max_new_tokens=20))
        clocked = list(generate(lm, ids, policy=timed, max_new_tokens=20))
        assert [r.token_ids for r in clocked] == [r.token_ids for r in plain]
        assert [r.kept_tokens for r in clocked] == [r.kept_tokens for r in plain]
        assert [r.kv_bytes for r in clocked] == [r.kv_bytes for r in plain]
        assert clocked[-1].policy == plain[-1].policy
        # a policy that never acts at decode (RecurFormer alone) is not asked there (engine.decode_step)
        assert timed.seconds["prefill"] > 0 and (timed.seconds["decode"] > 0) == policy.compresses_at_decode
        # what the old wrapper ran instead: the replaced groups held as KV, not as states
        assert clocked[-1].kv_bytes != baseline[-1].kv_bytes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events: run on the GPU machine")
def test_on_a_gpu_the_policy_is_timed_by_events_without_waiting():
    """On CUDA each call is bracketed by two events and nothing synchronises: the run's steps are not
    slowed by the timing, and the seconds, read once at the end, are positive and below the run's time."""
    from pyramid_core.policies import H2OPolicy

    lm = tiny_model("llama")
    lm.model.to("cuda")
    ids = torch.randint(3, 97, (1, 40), generator=torch.Generator().manual_seed(0)).cuda()
    timed = TimedPolicy(H2OPolicy(kv_budget=0.5))
    records = list(generate(lm, ids, policy=timed, max_new_tokens=12))
    assert all(isinstance(span, tuple) for span in timed.spans["decode"]) and len(timed.spans["decode"]) > 0
    assert 0 < timed.seconds["decode"] < sum(r.step_time_s for r in records[1:])
