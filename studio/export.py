"""A run's trace (JSON) and its figures (standalone HTML), written to a folder for download."""

from __future__ import annotations

import shutil
from pathlib import Path

import visual

from .modes import MODES


def export_run(runs: dict, out: Path) -> list[str]:
    """runs: {mode: [record dicts]} as gr.State keeps them. Returns the written files' paths.

    Every file name is made here: the trace's, the fixed figure names, and one per mode of MODES (a
    run under any other name is refused rather than named after it)."""
    unknown = [m for m in runs if m not in MODES]
    if unknown:
        raise ValueError(f"cannot export runs of unknown modes {unknown}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    trace = out / "trace.json"
    trace.write_text(visual.records_to_json(runs))
    figs = {"kv_memory": visual.kv_memory_figure(runs), "pyramid": visual.pyramid_figure(runs),
            "kept_tokens": visual.kept_tokens_figure(runs)}
    for mode, run in runs.items():
        figs[f"attention_{mode.replace('+', '_')}"] = visual.attention_grid_figure(run[-1])
    return [str(trace)] + [str(p) for p in visual.figures_to_files(figs, out)]
