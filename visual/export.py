"""Figures to standalone HTML files, and runs to and from JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import plotly.graph_objects as go

from pyramid_core.trace import StepRecord

from .records import as_runs

FIGURE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def figures_to_files(figs: dict[str, go.Figure], out_dir) -> list[Path]:
    """Write each figure to out_dir/<name>.html with plotly.js embedded (works offline); returns the paths.

    Names may use letters, digits, '_', '-' and '.', so a name can never point outside out_dir.
    """
    for name, fig in figs.items():
        if not isinstance(name, str) or not FIGURE_NAME.fullmatch(name) or name.startswith("."):
            raise ValueError(f"figure name {name!r} must match {FIGURE_NAME.pattern} and not start with '.'")
        if not isinstance(fig, go.Figure):
            raise ValueError(f"figure {name!r} is a {type(fig).__name__}, not a plotly Figure")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        paths.append(path)
    return paths


def records_to_json(runs: dict[str, list[StepRecord]]) -> str:
    """{mode: [record dict, ...]} as JSON, after validation (modes without records are left out)."""
    return json.dumps({mode: [r.to_dict() for r in run] for mode, run in as_runs(runs).items()})


def records_from_json(text: str) -> dict[str, list[StepRecord]]:
    """The inverse of records_to_json: validated StepRecords per mode."""
    return as_runs(json.loads(text))
