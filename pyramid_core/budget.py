"""One KV budget, one meaning: the share of the full cache's tokens held, averaged over a generation.

The full cache holds every token seen in every layer. A policy holding kept[l] tokens in layer l after
a step with `seen` tokens holds sum(kept) / (layers x seen) of it (metrics.kv_share); a budget asks
for the mean of that share over the generation's records (the prefill and each decode step), which is
what `kv_share_reached` measures afterwards.

The user gives either `kv_budget`, that share in (0, 1], or `kv_tokens`, a number of tokens per
layer, read as the share a cache holding that many tokens at every step would hold. `solve` turns
either into a policy's settings for a prompt length and a number of new tokens:

- every budgeted policy plans the tokens it will hold from the lengths alone (`planned_kv_tokens`:
  the policies' own arithmetic, run without a model, since what they keep depends on lengths, not on
  token values), so the planned share is the share the engine's records will show;
- the solver turns the policy's `budget_knob` (the kept share for streaming, H2O and SnapKV; the decay
  for PyramidInfer) over a grid, then bisects where the planned share crosses the target, and keeps
  the closest setting not above the target (or just above, within the tolerance);
- when no setting comes within TOLERANCE, it tries the policy's `budget_fallbacks` in order
  (PyramidInfer: narrower recent windows and minimum contexts, steeper schedules), and refuses the
  request with the lowest share any of them reaches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from .policies.base import Policy, check_share

TOLERANCE = 0.015  # how far the planned share may land from the one asked
GRID = 32          # settings tried evenly over [0, 1] before bisecting
BISECTIONS = 24


@dataclass(frozen=True)
class Budget:
    """What the cache may hold: `share`, of the full cache's tokens in (0, 1] (kv_budget), or `tokens`,
    a number of tokens per layer (kv_tokens). Exactly one is given."""

    share: float | None = None
    tokens: int | None = None

    def __post_init__(self):
        if (self.share is None) == (self.tokens is None):
            raise ValueError("give either kv_budget (a share of the full cache) or kv_tokens (tokens), not both")
        if self.share is not None:
            check_share("kv_budget", self.share)
        elif int(self.tokens) != self.tokens or self.tokens < 1:
            raise ValueError(f"kv_tokens must be an integer >= 1, got {self.tokens}")

    def target(self, prompt_tokens: int, new_tokens: int) -> float:
        """The share asked, averaged over the generation's records (kv_tokens held at every step)."""
        if self.share is not None:
            return self.share
        seen = range(prompt_tokens, prompt_tokens + new_tokens)
        return sum(min(1.0, self.tokens / n) for n in seen) / len(seen)

    def describe(self) -> str:
        return f"kv_budget {self.share:g}" if self.share is not None else f"kv_tokens {self.tokens}"


def from_knobs(kv_budget: float | None = None, kv_tokens: int | None = None) -> Budget | None:
    """The budget of a request's two knobs (None: no budget)."""
    if kv_budget is None and kv_tokens is None:
        return None
    return Budget(share=None if kv_budget is None else float(kv_budget),
                  tokens=None if kv_tokens is None else kv_tokens)


def planned_share(policy: Policy, prompt_tokens: int, new_tokens: int, num_layers: int) -> float:
    """The policy's share of the full cache, averaged over a generation of new_tokens records."""
    totals = policy.planned_kv_tokens(prompt_tokens, new_tokens, num_layers)
    return sum(t / (num_layers * (prompt_tokens + i)) for i, t in enumerate(totals)) / len(totals)


def solve(policy: Policy, budget: Budget | None, prompt_tokens: int, new_tokens: int, num_layers: int) -> Policy:
    """A copy of `policy` whose planned share over the generation is within TOLERANCE of the budget.

    Raises ValueError, one sentence naming the lowest share reachable, when no setting reaches it, or
    when the mode takes no budget. No budget: the policy as it is.
    """
    if budget is None:
        return policy
    if policy.budget_knob is None:
        raise ValueError(f"mode {policy.name!r} takes no KV budget (kv_budget, kv_tokens)")
    if new_tokens < 1 or prompt_tokens < 1:
        raise ValueError("a KV budget needs a prompt and at least one new token")
    target = budget.target(prompt_tokens, new_tokens)
    lowest, highest = 1.0, 0.0
    for fallback in policy.budget_fallbacks:
        base = narrowed(policy, fallback)
        share_at = lambda x: planned_share(_turned(base, x), prompt_tokens, new_tokens, num_layers)  # noqa: E731
        points = search(share_at, target)
        lowest, highest = min(lowest, min(points.values())), max(highest, max(points.values()))
        setting = closest(points, target)
        if setting is not None:
            solved = _turned(base, setting)
            solved.budget_plan = {"kv_share_asked": round(target, 4),
                                  "kv_share_planned": round(points[setting], 4),
                                  **({"kv_tokens_asked": budget.tokens} if budget.tokens else {})}
            return solved
    # a cache that stops growing (H2O's) cannot hold a high share of a long generation: name the bound missed
    bound = (f"the highest KV share it can hold is {highest:.3f}, so ask for at most that" if target > highest
             else f"the lowest KV share it can hold is {lowest:.3f}, so ask for at least that")
    raise ValueError(f"{budget.describe()} is out of reach for {policy.name} on this {prompt_tokens}-token "
                     f"prompt with {new_tokens} new tokens: {bound}")


def narrowed(policy: Policy, fallback: dict) -> Policy:
    """The policy with a fallback's knobs, never loosening a number the policy already has lower."""
    knobs = {k: min(v, getattr(policy, k)) if isinstance(v, (int, float)) else v for k, v in fallback.items()}
    return dataclasses.replace(policy, **knobs)


def _turned(policy: Policy, value: float) -> Policy:
    return dataclasses.replace(policy, **{policy.budget_knob: value})


def search(share_at: Callable[[float], float], target: float) -> dict[float, float]:
    """{setting: planned share} over a grid of settings in (0, 1], refined by bisection wherever the
    share crosses the target between neighbours (the share need not be monotone: a PyramidInfer layer
    whose kept context would fall to min_context_length is not compressed at all)."""
    grid = [max(i / GRID, 1e-3) for i in range(GRID + 1)]
    points = {x: share_at(x) for x in grid}
    for low, high in zip(grid, grid[1:]):
        if points[low] <= target < points[high]:
            for _ in range(BISECTIONS):
                mid = (low + high) / 2
                points[mid] = share_at(mid)
                low, high = (mid, high) if points[mid] <= target else (low, mid)
    return points


def closest(points: dict[float, float], target: float) -> float | None:
    """The setting whose share is closest to the target from below, else from above, within TOLERANCE."""
    below = [x for x, s in points.items() if target - TOLERANCE <= s <= target]
    if below:
        return max(below, key=lambda x: (points[x], -x))
    above = [x for x, s in points.items() if target < s <= target + TOLERANCE]
    return min(above, key=lambda x: (points[x], x)) if above else None
