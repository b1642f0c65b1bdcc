"""The retrieval comparison (`pyramid eval --suite retrieval`): exact-match accuracy on the reading
model's held-out tasks against the share of KV each mode reached, and a needle grid (prompt length x
depth of the fact, single-fact accuracy per cell) per mode at one budget.

Modes come from the policy registry, so a policy added there joins without a change here:
- the baseline runs once (it holds everything);
- a mode that replaces KV groups with recurrences (RecurFormer) runs once, at the share its adapter gives;
- every other mode with a `kv_budget` knob runs at each budget, built by make_policy(mode, kv_budget=b);
- a mode without one runs once at its defaults.

The share reached is measured per task from the engine's records (metrics.generation_kv_share: slots
held over the full cache's, averaged over the answer's generation), never read from the budget asked.
A budget a policy refuses (a ValueError from building it, or from the engine for a batch) is recorded
with its sentence; the refused tasks count in no accuracy. The tasks are the held-out split as stored:
nothing here is tuned on them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from . import reading
from .budget import Budget, solve
from .models import LoadedModel
from .policies import ALL_POLICIES

log = logging.getLogger(__name__)

BASELINE = "baseline"
KINDS = ("single", "multi", "two", "story", "quote")


@dataclass(frozen=True)
class SuiteSettings:
    """Which held-out tasks and budgets the suite runs. `per_cell` caps the tasks of each (kind, length,
    depth) cell; `grid_budget` (one of `budgets`) is the budget the needle grids are drawn at."""

    lengths: tuple[int, ...] = (512, 1024)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    per_cell: int | None = 4
    kinds: tuple[str, ...] = ("single",)
    budgets: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    grid_budget: float = 0.5

    def __post_init__(self):
        if any(not 0 < b <= 1 for b in self.budgets) or not self.budgets:
            raise ValueError(f"budgets must be shares in (0, 1], got {self.budgets}")
        if self.grid_budget not in self.budgets:
            raise ValueError(f"grid_budget {self.grid_budget} must be one of the budgets {self.budgets}")
        if set(self.kinds) - set(KINDS) or "single" not in self.kinds:
            raise ValueError(f"kinds must include 'single' and come from {KINDS}, got {self.kinds}")
        if self.per_cell is not None and self.per_cell < 1:
            raise ValueError(f"per_cell must be at least 1, got {self.per_cell}")


# The CPU suite: 40 single-fact tasks (512 and 1024 tokens, 5 depths, 4 each) at 5 budgets fits the
# 15-minute limit on 2 cores with h2o and snapkv registered (timings in benchmarks/retrieval_embedded.md).
DEFAULT = SuiteSettings()
# The GPU grid: every stored task (16 per cell, lengths to 4096, all kinds) at 9 budgets.
FULL = SuiteSettings(lengths=(512, 1024, 2048, 3072, 4096), per_cell=None, kinds=KINDS,
                     budgets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))


@dataclass
class Point:
    """One run of the suite: a mode at a budget (None: once, at its own share)."""

    mode: str
    budget: float | None
    knobs: dict = field(default_factory=dict)
    error: str | None = None  # why the mode could not be built at all (the row says so)


def select_tasks(tasks: list[dict], settings: SuiteSettings) -> list[dict]:
    """The stored tasks of the settings' kinds and lengths (single facts also of its depths), at most
    per_cell of each (kind, length, depth) cell, in file order."""
    seen, out = defaultdict(int), []
    for t in tasks:
        if t["kind"] not in settings.kinds or t["length"] not in settings.lengths:
            continue
        if t["kind"] == "single" and t["depth"] not in settings.depths:
            continue
        cell = (t["kind"], t["length"], t.get("depth"))
        if settings.per_cell is None or seen[cell] < settings.per_cell:
            out.append(t)
            seen[cell] += 1
    return out


def takes_budget(cls) -> bool:
    """Whether a KV budget can steer the mode: it names the knob the solver turns (budget.py)."""
    return getattr(cls, "budget_knob", None) is not None


def plan(lm: LoadedModel, budgets, registry: dict | None = None, knobs: dict | None = None) -> list[Point]:
    """The suite's points, in registry order (see the module docstring for the rules). knobs: {mode: {knob:
    value}} passed to every policy of that mode (e.g. a RecurFormer adapter)."""
    registry, knobs = registry or ALL_POLICIES, knobs or {}
    points = []
    for mode, cls in registry.items():
        own = dict(knobs.get(mode, {}))
        if mode == BASELINE:
            points.append(Point(mode, None, own))
            continue
        try:
            recurrent = bool(cls(**own).recurrent_modules(lm))
        except ValueError as err:  # e.g. an adapter made for another model
            points.append(Point(mode, None, own, error=str(err)))
            continue
        if recurrent or not takes_budget(cls):
            points.append(Point(mode, None, own))
        else:
            points += [Point(mode, b, own) for b in budgets]
    return points


def run_point(lm: LoadedModel, tasks: list[dict], point: Point, batch: int = 8) -> dict:
    """The point's row: per task right (None when refused) and share reached, and their score."""
    from .policies.registry import make_policy

    right, shares, refusal = [None] * len(tasks), [None] * len(tasks), point.error
    if refusal is None:
        try:
            policy = None if point.mode == BASELINE else make_policy(point.mode, point.knobs)
        except ValueError as err:  # knobs the policy refuses outright
            refusal = str(err)
        else:
            budget = None if point.budget is None else Budget(share=point.budget)
            right, shares, refusal = answer_all(lm, tasks, policy, batch, budget)
    return {"mode": point.mode, "budget": point.budget, "knobs": point.knobs, "refusal": refusal,
            "right": right, "shares": [None if s is None else round(s, 5) for s in shares],
            **score(tasks, right, shares)}


def answer_all(lm: LoadedModel, tasks: list[dict], policy, batch: int,
               budget: Budget | None = None) -> tuple[list, list, str | None]:
    """Per task: right or wrong, and the share reached; a batch the policy refuses stays None, and the
    refusal's sentence comes back. With a budget, the policy is solved for each batch's longest prompt
    and the answer's token allowance (budget.py)."""
    stops = reading.newline_ids(lm.tokenizer) + sorted({lm.tokenizer.eos_token_id} - {None})
    order = sorted(range(len(tasks)), key=lambda i: len(tasks[i]["prompt"]))  # similar lengths share a batch
    right, shares, refusal = [None] * len(tasks), [None] * len(tasks), None
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        prompts = [tasks[i]["prompt"] for i in idx]
        try:
            solved = policy if budget is None else solve(
                policy, budget, max(len(ids) for ids in lm.tokenizer(prompts).input_ids),
                reading.MAX_ANSWER_TOKENS, lm.config.num_hidden_layers)
            answers, got = reading.answer_batch(lm, prompts, solved, stops)
        except ValueError as err:  # a budget out of reach for these prompts: reported, not hidden
            refusal = str(err)
            continue
        for i, given, share in zip(idx, answers, got):
            right[i] = reading.answer_matches(given, tasks[i]["answer"])
            shares[i] = share["generation"]
    return right, shares, refusal


def score(tasks: list[dict], right: list, shares: list) -> dict:
    """Accuracy per kind, the single-fact grid {length: {depth: accuracy}}, the mean share reached, over
    the tasks answered (right is not None)."""
    answered = [(t, r, s) for t, r, s in zip(tasks, right, shares) if r is not None]
    by_kind, grid = defaultdict(list), defaultdict(lambda: defaultdict(list))
    for t, r, _ in answered:
        by_kind[t["kind"]].append(r)
        if t["kind"] == "single":
            grid[t["length"]][t["depth"]].append(r)
    mean = lambda xs: sum(xs) / len(xs)
    return {
        "accuracy": {k: mean(v) for k, v in sorted(by_kind.items())},
        "count": {k: len(v) for k, v in sorted(by_kind.items())},
        "grid": {str(n): {f"{d:g}": mean(v) for d, v in sorted(row.items())} for n, row in sorted(grid.items())},
        "kv_share": mean([s for _, _, s in answered]) if answered else None,
        "refused": len(tasks) - len(answered),
    }


def run_suite(lm: LoadedModel, tasks: list[dict], settings: SuiteSettings = DEFAULT, batch: int = 8,
              registry: dict | None = None, knobs: dict | None = None) -> dict:
    """Every point of the plan on the settings' tasks, and the needle grid of each mode at grid_budget
    (a mode run once: its own share)."""
    chosen = select_tasks(tasks, settings)
    if not chosen:
        raise ValueError(f"no stored task matches {settings}")
    points = []
    for point in plan(lm, settings.budgets, registry, knobs):
        log.info("retrieval: %s at %s", point.mode, point.budget if point.budget is not None else "its own share")
        points.append(run_point(lm, chosen, point, batch))
    grids = {p["mode"]: {"budget": p["budget"], "kv_share": p["kv_share"], "grid": p["grid"]}
             for p in points if p["budget"] in (None, settings.grid_budget)}
    return {"settings": dataclasses.asdict(settings), "modes": list(dict.fromkeys(p["mode"] for p in points)),
            "tasks": [{k: t.get(k) for k in ("kind", "length", "depth", "answer")} for t in chosen],
            "points": points, "grids": grids}
