"""Figures to standalone HTML (and, with kaleido, PNG) files, and runs to and from JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from pyramid_core.trace import StepRecord

from .records import as_runs

FIGURE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def figures_to_files(figs: dict[str, dict | go.Figure], out_dir, plotlyjs: bool | str = True) -> list[Path]:
    """Write each figure to out_dir/<name>.html; returns the paths. plotlyjs: True embeds plotly.js
    (works offline, ~4.6 MB a file); "cdn" loads it from the web (a few KB a file, for committed figures).

    Names may use letters, digits, '_', '-' and '.', so a name can never point outside out_dir.
    """
    out = _checked(figs, out_dir)
    paths = []
    for name, fig in figs.items():
        path = out / f"{name}.html"
        pio.write_html(fig, path, include_plotlyjs=plotlyjs, full_html=True)  # checks every property
        paths.append(path)
    return paths


def figures_to_png(figs: dict[str, dict | go.Figure], out_dir, width: int = 760, height: int = 480) -> list[Path]:
    """Write each figure to out_dir/<name>.png through plotly's image export, which needs kaleido 1.x and
    a Chromium (Debian: apt install chromium). Without kaleido: ModuleNotFoundError saying so."""
    try:
        import kaleido  # noqa: F401  (plotly imports it itself; checked here for a clear message)
    except ImportError as err:
        raise ModuleNotFoundError("PNG export needs kaleido: pip install 'kaleido>=1,<2' (it drives a "
                                  "Chromium, e.g. Debian's chromium package)") from err
    out = _checked(figs, out_dir)
    paths = [out / f"{name}.png" for name in figs]
    # one browser session for all of them: starting Chromium takes seconds
    pio.write_images(list(figs.values()), paths, width=width, height=height)
    return paths


def _checked(figs: dict[str, dict | go.Figure], out_dir) -> Path:
    for name, fig in figs.items():
        if not isinstance(name, str) or not FIGURE_NAME.fullmatch(name) or name.startswith("."):
            raise ValueError(f"figure name {name!r} must match {FIGURE_NAME.pattern} and not start with '.'")
        if not isinstance(fig, (dict, go.Figure)):
            raise ValueError(f"figure {name!r} is a {type(fig).__name__}, not a Plotly figure (a dict or go.Figure)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def records_to_json(runs: dict[str, list[StepRecord]]) -> str:
    """{mode: [record dict, ...]} as JSON, after validation (modes without records are left out)."""
    return json.dumps({mode: [r.to_dict() for r in run] for mode, run in as_runs(runs).items()})


def records_from_json(text: str) -> dict[str, list[StepRecord]]:
    """The inverse of records_to_json: validated StepRecords per mode."""
    return as_runs(json.loads(text))
