"""KV-cache policies: what each layer keeps. `ALL_POLICIES` maps every mode name to its policy class
(the CLI, the app and the tests all go through it)."""

from .base import Keep, LayerContext, Policy
from .full import FullPolicy
from .pyramid import PyramidPolicy
from .recurformer import PyramidRecurFormerPolicy, RecurFormerPolicy
from .streaming import StreamingPolicy

ALL_POLICIES = {"baseline": FullPolicy, "pyramid": PyramidPolicy, "streaming": StreamingPolicy,
                "recurformer": RecurFormerPolicy, "pyramid+recurformer": PyramidRecurFormerPolicy}

__all__ = ["ALL_POLICIES", "FullPolicy", "Keep", "LayerContext", "Policy", "PyramidPolicy", "PyramidRecurFormerPolicy",
           "RecurFormerPolicy", "StreamingPolicy"]
