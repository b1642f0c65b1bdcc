"""Modes by name, and the CLI flags for every policy knob, derived from the policies' dataclass fields.

Defaults live only in the dataclasses; a flag the user did not give is not passed, so the dataclass
default applies. A knob given for a mode that has no such knob is an error, never silently ignored.
The KV budget is not a policy knob but the request's (`--kv-budget` or `--kv-tokens`, budget.py): it
is solved into the policy's settings once the prompt's length is known.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..budget import Budget, from_knobs, solve
from . import ALL_POLICIES
from .base import Policy

MODES = ALL_POLICIES


def _knobs() -> dict[str, dataclasses.Field]:
    fields = {}
    for cls in MODES.values():
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                if f.init:
                    fields.setdefault(f.name, f)
    return fields


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("policy knobs (defaults: the policy's own)")
    for name, f in _knobs().items():
        if name == "kv_budget":  # one flag for every mode, below
            continue
        kind = type(f.default) if f.default is not dataclasses.MISSING else str
        kind = float if kind is int and name.endswith("ratio") else kind
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"knob_{name}", type=kind, default=None,
                           help=(f.metadata or {}).get("help"))
    group.add_argument("--preset", default=None, help="a named set of knobs (see the policy)")
    group.add_argument("--kv-budget", type=float, default=None,
                       help="share of the full cache's KV tokens to hold, averaged over the generation, in (0, 1]; "
                            "solves the mode's settings (PyramidInfer's decay)")
    group.add_argument("--kv-tokens", type=int, default=None,
                       help="instead of --kv-budget: KV tokens per layer to hold (as a share of the tokens seen)")


def policy_from_args(args: argparse.Namespace) -> tuple[Policy, Budget | None]:
    """The mode's policy from the knob flags and --preset, and the request's KV budget (None: none)."""
    knobs = {k[len("knob_"):]: v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    policy = make_policy(args.mode, knobs, preset=args.preset)
    return policy, request_budget(policy, args.kv_budget, args.kv_tokens, args.preset)


def make_policy(mode: str, knobs: dict | None = None, preset: str | None = None) -> Policy:
    """Build the policy of a mode from user knobs and/or a preset name."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(sorted(MODES))}")
    cls = MODES[mode]
    knobs = dict(knobs or {})
    allowed = {f.name for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls) else set()
    unknown = sorted(set(knobs) - allowed)
    if unknown:
        raise ValueError(f"mode {mode!r} has no knob(s) {', '.join(unknown)}")
    if preset is not None:
        build = getattr(cls, "configure", None)
        if build is None:
            raise ValueError(f"mode {mode!r} has no presets")
        return build(knobs, preset=preset)
    return cls(**knobs)


def request_budget(policy: Policy, kv_budget: float | None = None, kv_tokens: int | None = None,
                   preset: str | None = None) -> Budget | None:
    """The KV budget asked for: kv_budget or kv_tokens, else the preset's kv_budget; checked against
    the mode (a mode that takes no budget refuses one)."""
    presets = getattr(policy, "presets", None) or {}
    if kv_budget is None and kv_tokens is None and preset in presets:
        kv_budget = presets[preset].get("kv_budget")
    budget = from_knobs(kv_budget, kv_tokens)
    if budget is not None and policy.budget_knob is None:
        raise ValueError(f"mode {policy.name!r} takes no KV budget (--kv-budget, --kv-tokens)")
    return budget


def preset_policy(mode: str, preset: str, prompt_tokens: int, new_tokens: int, num_layers: int) -> Policy:
    """A preset's policy, its KV budget (if it has one) solved for these lengths (benchmarks)."""
    policy = make_policy(mode, preset=preset)
    return solve(policy, request_budget(policy, preset=preset), prompt_tokens, new_tokens, num_layers)
