"""Pure functions from trace records (pyramid_core.trace) to Plotly figure dicts (theme.py) and table rows.

Every function accepts the dataclasses or their dict/JSON form, raises ValueError on records that
break the contract, and returns an annotated empty figure when there is nothing to show.
"""

from .attention import attention_figure, attention_grid_figure
from .binning import MAX_COLUMNS
from .export import figures_to_files, figures_to_png, records_from_json, records_to_json
from .kept_words import kept_words_html, kept_words_pair
from .memory import kv_memory_figure
from .pyramid import kept_tokens_figure, pyramid_figure
from .recency import recency_figure
from .retrieval import curve_figure, needle_figure, retrieval_figures
from .records import as_record, as_report, as_runs
from .summary import COLUMNS, summary_rows, summary_table_markdown
from .theme import MODES, TEMPLATE, empty_figure, mode_color

__all__ = [
    "COLUMNS",
    "MAX_COLUMNS",
    "MODES",
    "TEMPLATE",
    "as_record",
    "as_report",
    "as_runs",
    "attention_figure",
    "attention_grid_figure",
    "curve_figure",
    "empty_figure",
    "figures_to_files",
    "figures_to_png",
    "kept_tokens_figure",
    "kept_words_html",
    "kept_words_pair",
    "kv_memory_figure",
    "mode_color",
    "needle_figure",
    "pyramid_figure",
    "recency_figure",
    "retrieval_figures",
    "records_from_json",
    "records_to_json",
    "summary_rows",
    "summary_table_markdown",
]
