"""KV-cache policies: what each layer keeps. `ALL_POLICIES` names every one (tests run over it)."""

from .base import Keep, LayerContext, Policy
from .full import FullPolicy

ALL_POLICIES = {"baseline": FullPolicy}

__all__ = ["ALL_POLICIES", "FullPolicy", "Keep", "LayerContext", "Policy"]
