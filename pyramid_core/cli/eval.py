"""Evaluate KV-cache modes on held-out text: perplexity, copy probe, greedy agreement over KV budgets.

Writes <out>.json and <out>.md (and, with --recency-out, a per-layer recency table). With
`--compare recurformer` it scores named RecurFormer modes per adapter instead of budget curves; with
`--suite retrieval|long` it runs an issue-17 comparison over every registered mode (cli/suite.py). See
pyramid_core/evaluate.py for what each number is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from pathlib import Path

import torch

from .. import eval_report, evaluate, reading
from ..budget import TOLERANCE
from ..policies.pyramid import BUDGET_FALLBACKS
from ..models import EMBEDDED_NAME, load_model
from ..policies.registry import MODES
from ..resources import asset
from . import suite

DEFAULT_TEXT = asset("heldout.txt")
DEFAULT_ADAPTERS = f"{asset('recurformer-embedded-25')},{asset('recurformer-embedded-50')}"
COMPARISONS = ("recurformer",)
READING_TARGETS = {"single": 0.9, "story": 0.7}  # the embedded model's targets (its model card)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=EMBEDDED_NAME, help="'embedded', a local HF directory or a hub id")
    parser.add_argument("--modes", default="pyramid,streaming", help="comma-separated modes to compare")
    parser.add_argument("--budgets", default="0.3,0.4,0.5,0.6,0.7", help="comma-separated KV shares")
    parser.add_argument("--text", default=str(DEFAULT_TEXT), help="held-out text file")
    parser.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    parser.add_argument("--samples", type=int, default=8, help="perplexity windows and agreement prompts")
    parser.add_argument("--probes", type=int, default=16, help="copy probes (and as many controls)")
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--continuation-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=48, help="greedy tokens per agreement prompt")
    parser.add_argument("--copy-k", type=int, default=8, help="tokens an exact greedy copy must match")
    parser.add_argument("--batch", type=int, default=8, help="rows per engine call")
    parser.add_argument("--recency-out", default=None, help="also write the per-layer recency table here (.md)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (1 is fastest when other jobs share the cores)")
    parser.add_argument("--json", action="store_true", help="print the result JSON instead of the table")
    parser.add_argument("--compare", choices=COMPARISONS, default=None,
                        help="score named modes instead of budget curves (--modes and --budgets are unused)")
    parser.add_argument("--adapters", default=DEFAULT_ADAPTERS, help="--compare: comma-separated adapter dirs")
    parser.add_argument("--twin-window", type=int, default=64, help="--compare: the window twin's recent tokens")
    parser.add_argument("--twin-sinks", type=int, default=4, help="--compare: the window twin's first tokens")
    parser.add_argument("--reading", action="store_true",
                        help="answer the held-out reading tasks (--reading-file) with the baseline and each of "
                             "--modes at its defaults, instead of the text measures")
    parser.add_argument("--reading-file", default=str(reading.READING_FILE), help="--reading: the tasks")
    parser.add_argument("--reading-kinds", default="",
                        help="--reading: only these kinds of task, comma-separated (e.g. story)")
    parser.add_argument("--per-cell", type=int, default=None,
                        help="--reading, --suite retrieval: at most this many tasks per (kind, length, depth) cell")
    parser.add_argument("--short-filler", type=int, default=0,
                        help="also run the copy probe with this many filler tokens (0: no short probe)")
    suite.add_arguments(parser)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"--budgets must be comma-separated numbers, got {text!r}") from err


def run(args: argparse.Namespace) -> dict:
    if args.suite:
        return _finish(args, *suite.run(args))
    if args.compare:
        return _finish(args, *_compare(args))
    if args.reading:
        return _finish(args, _reading(args), eval_report.reading_markdown)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES or m == "baseline"]
    if unknown:
        raise ValueError(f"unknown or baseline mode(s) {unknown}; the baseline is always run")
    budgets = _floats(args.budgets)
    if any(not 0 < b <= 1 for b in budgets):
        raise ValueError(f"--budgets must be shares in (0, 1], got {budgets}")
    text_path = _prepare(args)
    start = time.perf_counter()
    lm, ids, data = _load(args, text_path)
    curves = evaluate.run_curves(lm, data, modes, budgets, batch=args.batch)
    result = _header(args, lm, ids, data, text_path, curves)
    result["settings"].update(modes=modes, budgets=budgets, pyramid_fallbacks=list(BUDGET_FALLBACKS),
                              budget_tolerance=TOLERANCE)
    result["summary"] = eval_report.quality_summary(result)
    if args.recency_out:
        result["recency"] = _recency(lm, ids, text_path.name, args.recency_out)
    result["elapsed_s"] = time.perf_counter() - start
    return _finish(args, result, eval_report.quality_markdown)


def _compare(args: argparse.Namespace) -> tuple[dict, object]:
    """--compare recurformer: the baseline and, per adapter, its untrained and trained RNNs, the window
    twin and pyramid+recurformer."""
    paths = [a.strip() for a in args.adapters.split(",") if a.strip()]
    missing = [a for a in paths if not (Path(a) / "adapter.json").exists()]
    if missing or not paths:
        raise ValueError(f"--adapters: no RecurFormer adapter at {missing or args.adapters!r}")
    text_path = _prepare(args)
    start = time.perf_counter()
    lm, ids, data = _load(args, text_path)
    groups = {a: json.loads((Path(a) / "adapter.json").read_text())["groups"] for a in paths}
    shares = {a: evaluate.adapter_share(g, lm.config.num_hidden_layers, lm.config.num_key_value_heads)
              for a, g in groups.items()}
    adapters = {f"{shares[a]:.0%}": a for a in paths}
    rows = evaluate.recurformer_rows(adapters, args.twin_window, args.twin_sinks)
    result = _header(args, lm, ids, data, text_path, evaluate.run_named(lm, data, rows, batch=args.batch))
    result["settings"].update(compare=args.compare, twin_window=args.twin_window, twin_sinks=args.twin_sinks,
                              adapters={t: (a, len(groups[a])) for t, a in adapters.items()})
    result["summary"] = eval_report.named_summary(result)
    result["elapsed_s"] = time.perf_counter() - start
    return result, eval_report.named_markdown


def _reading(args: argparse.Namespace) -> dict:
    """--reading: each mode's answers to the stored held-out reading tasks, scored exactly."""
    from ..policies.registry import make_policy

    modes = ["baseline"] + [m.strip() for m in args.modes.split(",") if m.strip() and m.strip() != "baseline"]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {', '.join(sorted(MODES))}")
    kinds = [k.strip() for k in args.reading_kinds.split(",") if k.strip()]
    tasks = reading.load_tasks(args.reading_file, limit=args.per_cell, kinds=kinds)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    scored = {}
    for mode in modes:
        results = reading.score(lm, tasks, None if mode == "baseline" else make_policy(mode), batch=args.batch)
        scored[mode] = {"summary": reading.summary(results), "results": results}
    return {
        "model": args.model, "date": datetime.date.today().isoformat(),
        "device": f"{args.device} ({torch.get_num_threads()} threads)" if args.device == "cpu"
        else f"{args.device} ({torch.cuda.get_device_name(0)})",
        "versions": {"torch": torch.__version__, "transformers": _version("transformers")},
        "settings": {"tasks": Path(args.reading_file).name, "kinds": kinds or None, "count": len(tasks),
                     "per_cell": args.per_cell,
                     "batch": args.batch, "dtype": str(lm.dtype), "targets": READING_TARGETS},
        "modes": scored, "elapsed_s": time.perf_counter() - start,
    }


def _prepare(args: argparse.Namespace) -> Path:
    text_path = Path(args.text)
    if not text_path.exists():
        raise ValueError(f"no held-out text at {text_path}")
    logging.getLogger(evaluate.__name__).setLevel(logging.INFO)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return text_path


def _load(args: argparse.Namespace, text_path: Path):
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    ids = lm.tokenizer(text_path.read_text(), add_special_tokens=False).input_ids
    data = evaluate.build_data(ids, lm.tokenizer.bos_token_id, args.samples, args.probes, args.context_tokens,
                               args.continuation_tokens, args.new_tokens, args.copy_k, args.short_filler)
    return lm, ids, data


def _header(args: argparse.Namespace, lm, ids: list[int], data, text_path: Path, scored: dict) -> dict:
    """The result: model, date, device, versions and the data settings around the scored modes."""
    for p in scored["points"]:
        p.pop("greedy_tokens")
    probe, layout = data.probes[0], data.layout
    return {
        "model": args.model, "date": datetime.date.today().isoformat(),
        "device": f"{args.device} ({torch.get_num_threads()} threads)",
        "versions": {"torch": torch.__version__, "transformers": _version("transformers")},
        "settings": {"text": text_path.name, "text_tokens": len(ids),
                     "samples": args.samples, "probes": args.probes, "context_tokens": args.context_tokens,
                     "continuation_tokens": args.continuation_tokens, "new_tokens": args.new_tokens,
                     "copy_k": args.copy_k, "span": layout.span, "cue": layout.cue,
                     "span_start": probe.span_start, "filler": layout.filler,
                     "short_filler": data.short_layout.filler if data.short_layout else 0,
                     "dtype": str(lm.dtype)},
        **scored,
    }


def _finish(args: argparse.Namespace, result: dict, markdown) -> dict:
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        out.with_suffix(".md").write_text(markdown(result))
    if not args.json:
        print(markdown(result))
    return result


def _recency(lm, ids: list[int], text_name: str, out: str, window: int = 16, sequences: int = 8,
             max_tokens: int = 1024) -> dict:
    """Recency scores on `sequences` BOS-led windows spread over the held-out tokens; writes `out`."""
    from ..recurformer.recency import recency_scores

    bos = [] if lm.tokenizer.bos_token_id is None else [lm.tokenizer.bos_token_id]
    windows = [bos + w for w in evaluate.spaced_windows(ids, max_tokens - len(bos), sequences, offset=0.5)]
    report = recency_scores(lm, windows, window=window, sink_len=4, max_tokens=max_tokens,
                            max_sequences=sequences)
    rows = eval_report.recency_rows(report)
    meta = {"model": lm.name, "date": datetime.date.today().isoformat(), "text": text_name,
            "sequences": sequences, "max_tokens": max_tokens, "window": window, "sink_len": 4,
            "near": 0.5, "far": 0.5}
    meta["summary"] = eval_report.recency_summary(rows)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(eval_report.recency_markdown(rows, meta))
    return {"meta": meta, "rows": rows, "report": report.to_dict()}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
