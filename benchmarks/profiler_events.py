"""Profiling decode steps on a CPU and placing each profiler event among its parents: shared by the CPU
op-count benchmarks (h2o_slot_step_cpu.py, recurformer_step_cpu_ops.py)."""

from __future__ import annotations

import sys

from torch.profiler import ProfilerActivity, profile


def profiled_steps(steps, watch) -> tuple[list, profile]:
    """The records of the iterable `steps`, run under torch.profiler (CPU) and sys.setprofile(watch)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sys.setprofile(watch)
        try:
            records = list(steps)
        finally:
            sys.setprofile(None)
    return records, prof


def inside(event, names) -> str | None:
    """The first of `names` among event's ancestors (itself included), else None."""
    while event is not None:
        if event.name in names:
            return event.name
        event = event.cpu_parent
    return None


def under_aten(event) -> bool:
    """Whether an aten op runs inside another (aten::to in aten::copy_): not a launch of its own."""
    event = event.cpu_parent
    while event is not None:
        if event.name.startswith("aten::"):
            return True
        event = event.cpu_parent
    return False
