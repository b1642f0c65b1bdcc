"""Modes by name, and the CLI flags for every policy knob, derived from the policies' dataclass fields.

Defaults live only in the dataclasses; a flag the user did not give is not passed, so the dataclass
default applies. A knob given for a mode that has no such knob is an error, never silently ignored.
"""

from __future__ import annotations

import argparse
import dataclasses

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
    group.add_argument("--kv-budget", default=None,
                       help="target KV size: a fraction of the full cache (0.45) or a token count (300)")


def policy_from_args(args: argparse.Namespace) -> Policy:
    knobs = {k[len("knob_"):]: v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    return make_policy(args.mode, knobs, preset=args.preset, kv_budget=args.kv_budget)


def make_policy(mode: str, knobs: dict | None = None, preset: str | None = None,
                kv_budget: str | float | None = None) -> Policy:
    """Build the policy of a mode from user knobs, a preset name and/or a KV budget."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(sorted(MODES))}")
    cls = MODES[mode]
    knobs = dict(knobs or {})
    allowed = {f.name for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls) else set()
    unknown = sorted(set(knobs) - allowed)
    if unknown:
        raise ValueError(f"mode {mode!r} has no knob(s) {', '.join(unknown)}")
    if preset is not None or kv_budget is not None:
        build = getattr(cls, "configure", None)
        if build is None:
            raise ValueError(f"mode {mode!r} takes no preset or KV budget")
        return build(knobs, preset=preset, kv_budget=kv_budget)
    return cls(**knobs)
