"""`pyramid eval --suite retrieval|long`: the issue-17 comparisons over every registered mode.

retrieval: exact-match accuracy on the held-out reading tasks against the share of KV reached, at each
budget, plus the needle grids (retrieval.py). long: 512-token generations after 1000-token prompts, where
PyramidInfer's decode compression runs (long_generation.py). The default settings fit a 2-core CPU;
--full is the GPU grid. Figures: `python benchmarks/retrieval_figures.py <out>.json` (pyramid_core draws
nothing).
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from importlib.metadata import version
from pathlib import Path

import torch

from .. import long_generation, long_report, reading, retrieval, retrieval_report
from ..models import load_model

SUITES = ("retrieval", "long")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", choices=SUITES, default=None,
                        help="run a comparison over every registered mode instead of --modes (see --full)")
    parser.add_argument("--full", action="store_true",
                        help="--suite: the full grid (every task, 9 budgets; 32 long prompts) for a GPU")


def run(args: argparse.Namespace) -> tuple[dict, object]:
    """The suite's result (model, device, versions, settings, rows) and its Markdown writer."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = _load_note()
    start, cpu = time.perf_counter(), time.process_time()
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.suite == "retrieval":
        result, markdown = _retrieval(args, lm), retrieval_report.retrieval_markdown
    else:
        result, markdown = _long(args, lm), long_report.long_markdown
    device = (f"{args.device} ({torch.get_num_threads()} threads)" if args.device == "cpu"
              else f"{args.device} ({torch.cuda.get_device_name(0)})")
    result.update(model=args.model, date=datetime.date.today().isoformat(), device=device, dtype=str(lm.dtype),
                  versions={"torch": torch.__version__, "transformers": version("transformers")},
                  load=load, elapsed_s=time.perf_counter() - start, cpu_s=time.process_time() - cpu)
    return result, markdown


def _retrieval(args: argparse.Namespace, lm) -> dict:
    settings = retrieval.FULL if args.full else retrieval.DEFAULT
    if args.per_cell is not None:
        settings = retrieval.SuiteSettings(**{**vars(settings), "per_cell": args.per_cell})
    tasks = reading.load_tasks(args.reading_file)
    result = retrieval.run_suite(lm, tasks, settings, batch=args.batch)
    result["task_file"] = Path(args.reading_file).name
    return result


def _long(args: argparse.Namespace, lm) -> dict:
    settings = long_generation.LONG_FULL if args.full else long_generation.LONG_DEFAULT
    text = Path(args.text)
    if not text.exists():
        raise ValueError(f"no held-out text at {text}")
    ids = lm.tokenizer(text.read_text(), add_special_tokens=False).input_ids
    result = long_generation.run_long(lm, ids, settings, batch=min(args.batch, settings.prompts),
                                      bos=lm.tokenizer.bos_token_id)
    result["text"] = text.name
    return result


def _load_note() -> str:
    """The machine's load when the suite started: other jobs sharing the cores slow it down."""
    try:
        one, _, _ = os.getloadavg()
    except OSError:
        return "load not measured"
    return f"load average {one:.1f} on {os.cpu_count()} cores at the start"
