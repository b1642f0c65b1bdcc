"""The baseline: the full KV cache, nothing dropped."""

from dataclasses import dataclass

from .base import Policy


@dataclass
class FullPolicy(Policy):
    name = "baseline"
