"""KV-cache policies: what each layer keeps. `ALL_POLICIES` maps every mode name (trace.MODES) to its
policy class (the CLI, the app and the tests all go through it)."""

from ..trace import MODES
from .base import Keep, LayerContext, Policy, PolicyState, Window
from .full import FullPolicy
from .h2o import H2OPolicy
from .pyramid import PyramidPolicy
from .recurformer import PyramidRecurFormerPolicy, RecurFormerPolicy
from .snapkv import SnapKVPolicy
from .streaming import StreamingPolicy

ALL_POLICIES = {cls.name: cls for cls in (FullPolicy, PyramidPolicy, StreamingPolicy, H2OPolicy, SnapKVPolicy,
                                          RecurFormerPolicy, PyramidRecurFormerPolicy)}
assert list(ALL_POLICIES) == [m.name for m in MODES], "trace.MODES and the policies name different modes"

__all__ = ["ALL_POLICIES", "FullPolicy", "H2OPolicy", "Keep", "LayerContext", "Policy", "PolicyState", "PyramidPolicy",
           "PyramidRecurFormerPolicy", "RecurFormerPolicy", "SnapKVPolicy", "StreamingPolicy", "Window"]
