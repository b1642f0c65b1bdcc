"""A run's trace (JSON) and its figures (standalone HTML), written to a folder for download."""

from __future__ import annotations

import shutil
from pathlib import Path

import visual


def export_run(runs: dict, out: Path) -> list[str]:
    """runs: {mode: [record dicts]} as gr.State keeps them. Returns the written files' paths."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    trace = out / "trace.json"
    trace.write_text(visual.records_to_json(runs))
    figs = {"kv_memory": visual.kv_memory_figure(runs), "pyramid": visual.pyramid_figure(runs),
            "kept_tokens": visual.kept_tokens_figure(runs)}
    for mode, run in runs.items():
        figs[f"attention_{mode.replace('+', '_')}"] = visual.attention_grid_figure(run[-1])
    return [str(trace)] + [str(p) for p in visual.figures_to_files(figs, out)]
