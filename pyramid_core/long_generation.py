"""Long generations (`pyramid eval --suite long`): quality when PyramidInfer's decode compression runs.

The reading and quality runs generate 24-128 tokens, while PyramidInfer's first decode compression comes
after a hundred or more generated tokens, so they never see it. Here each prompt is BOS plus
prompt_tokens - 1 tokens of held-out text, and every mode generates new_tokens greedy tokens (no EOS
stop) after it:

- agreement: each mode's greedy tokens against the baseline's (metrics.greedy_agreement);
- perplexity: the text's next new_tokens tokens teacher-forced through decode steps after the
  compressed prompt (evaluate.continuation_logits), so the policy compresses while it reads them;
- share reached: per row from the greedy runs' records, averaged over the generation;
- compressions: from the same records (metrics.evictions), the decode steps at which some layer held
  fewer tokens than before plus the new one: the check that decode compression really ran.

PyramidInfer runs at each budget through make_policy(mode, kv_budget=b); every other mode with a budget
(streaming, and H2O and SnapKV once registered) then runs at the share PyramidInfer reached, so the
comparison is at equal share whether or not PyramidInfer reached the budget asked.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch

from .budget import Budget, solve
from .evaluate import continuation_logits, greedy_runs, spaced_windows, token_logprobs
from .metrics import evictions, generation_kv_share, greedy_agreement
from .models import LoadedModel
from .policies import ALL_POLICIES
from .recurrent_groups import held_group_shares
from .retrieval import BASELINE, plan

log = logging.getLogger(__name__)

SUBJECT = "pyramid"


@dataclass(frozen=True)
class LongSettings:
    prompts: int = 4           # held-out windows, spread over the text
    prompt_tokens: int = 1000  # BOS included
    new_tokens: int = 512      # greedy tokens, and teacher-forced continuation tokens
    # shares PyramidInfer reaches over 1000 + 512 tokens (its floor there is ~0.33: the decode-time
    # chunks it adds keep the share up); an unreachable one is reported as refused, not run
    budgets: tuple[float, ...] = (0.4, 0.6)

    def __post_init__(self):
        if self.prompts < 1 or self.prompt_tokens < 2 or self.new_tokens < 2:
            raise ValueError(f"prompts >= 1, prompt_tokens >= 2 and new_tokens >= 2, got {self}")
        if not self.budgets or any(not 0 < b <= 1 for b in self.budgets):
            raise ValueError(f"budgets must be shares in (0, 1], got {self.budgets}")


LONG_DEFAULT = LongSettings()
LONG_FULL = LongSettings(prompts=32)


def build_prompts(ids: list[int], bos: int | None, s: LongSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts [N, prompt_tokens] (BOS first) and their text's next new_tokens tokens [N, new_tokens]."""
    head = [] if bos is None else [bos]
    body = s.prompt_tokens - len(head)
    wins = spaced_windows(ids, body + s.new_tokens, s.prompts, offset=0.5)
    return torch.tensor([head + w[:body] for w in wins]), torch.tensor([w[body:] for w in wins])


def compression_summary(per_step: list[list[int]], num_layers: int) -> dict:
    """From metrics.evictions of one row: how many decode steps evicted, the (step, layer) events, the
    first decode step that evicted, and the events per layer."""
    steps = [i + 1 for i, layers in enumerate(per_step) if layers]
    return {"steps": len(steps), "events": sum(len(s) for s in per_step), "first_step": steps[0] if steps else None,
            "per_layer": [sum(layer in s for s in per_step) for layer in range(num_layers)]}


def run_mode(lm: LoadedModel, prompts: torch.Tensor, continuations: torch.Tensor, policy,
             reference: list[list[int]] | None, batch: int) -> dict:
    """Greedy tokens, share reached, compressions (first row), agreement and teacher-forced perplexity."""
    held = held_group_shares(policy.recurrent_modules(lm) if policy else {}, lm.config.num_hidden_layers,
                             lm.config.num_key_value_heads)
    new_tokens = continuations.shape[1]
    tokens, shares, nlls, evicted = [], [], [], None
    for i in range(0, prompts.shape[0], batch):
        ids, cont = prompts[i:i + batch], continuations[i:i + batch]
        got, records = greedy_runs(lm, ids, policy, new_tokens)
        tokens += got
        shares += [generation_kv_share(records, row, ids.shape[1], held) for row in range(len(got))]
        evicted = evicted or evictions(records, 0)
        logits = continuation_logits(lm, ids, cont, policy)
        nlls += (-token_logprobs(logits, cont.to(logits.device)).mean(1)).tolist()
    nll = sum(nlls) / len(nlls)
    result = {"kv_share": sum(shares) / len(shares), "nll": nll, "ppl": math.exp(nll),
              "compressions": compression_summary(evicted, len(held)), "tokens": tokens}
    if reference is not None:
        pairs = [greedy_agreement(t, r) for t, r in zip(tokens, reference)]
        result["agreement"] = {"prefix": sum(p for p, _ in pairs) / len(pairs),
                               "equal": sum(e for _, e in pairs) / len(pairs)}
    return result


def run_long(lm: LoadedModel, ids: list[int], settings: LongSettings = LONG_DEFAULT, batch: int = 4,
             bos: int | None = None, registry: dict | None = None) -> dict:
    """The baseline, then per budget PyramidInfer and every other budgeted mode at PyramidInfer's share.
    ids: held-out text's token ids; bos: put first in every prompt (None: no BOS)."""
    from .policies.registry import make_policy

    registry = registry or ALL_POLICIES
    if SUBJECT not in registry:
        raise ValueError(f"the long-generation suite compares against {SUBJECT!r}, which is not registered")
    prompts, continuations = build_prompts(ids, bos, settings)
    log.info("long: baseline")
    base = run_mode(lm, prompts, continuations, None, None, batch)
    rows = [{"mode": BASELINE, "budget": None, **base}]
    # the modes the retrieval suite runs at each budget (not the baseline, not RecurFormer's)
    others = [p.mode for p in plan(lm, [1.0], registry) if p.budget is not None and p.mode != SUBJECT]
    refused = []
    for budget in settings.budgets:
        log.info("long: %s at %g", SUBJECT, budget)
        try:
            policy = solved(lm, make_policy(SUBJECT), budget, prompts, continuations)
        except ValueError as err:  # out of reach for these lengths: said in the report
            refused.append(str(err))
            continue
        pyr = run_mode(lm, prompts, continuations, policy, base["tokens"], batch)
        rows.append({"mode": SUBJECT, "budget": budget, **pyr})
        for mode in others:
            log.info("long: %s at %.3f", mode, pyr["kv_share"])
            try:
                policy = solved(lm, make_policy(mode), min(1.0, pyr["kv_share"]), prompts, continuations)
            except ValueError as err:  # e.g. H2O, whose cache stops growing, cannot hold a high share
                refused.append(str(err))
                continue
            row = run_mode(lm, prompts, continuations, policy, base["tokens"], batch)
            rows.append({"mode": mode, "budget": pyr["kv_share"], "matched_to": budget, **row})
    for row in rows:
        row["ppl_ratio"] = row["ppl"] / base["ppl"]
        row.pop("tokens")
    return {"settings": asdict(settings), "modes": list(dict.fromkeys(r["mode"] for r in rows)), "rows": rows,
            "refused": refused}


def solved(lm: LoadedModel, policy, share: float, prompts: torch.Tensor, continuations: torch.Tensor):
    """The policy solved for a KV share over these prompts' lengths and new tokens (budget.py)."""
    return solve(policy, Budget(share=share), prompts.shape[1], continuations.shape[1], lm.config.num_hidden_layers)
