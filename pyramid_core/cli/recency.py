"""Score every attention head's recency on calibration text (RecurFormer's head selection).

Prints one line per layer: the mean window mass, the mean sink mass, how many query heads score at
least --threshold (window + sink mass) and how many KV groups do (a group counts when all its heads
do). Saves the RecencyReport as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..models import EMBEDDED_NAME, load_model
from ..resources import asset

DEFAULT_TEXT = asset("calibration.txt")  # not the eval text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=EMBEDDED_NAME, help="'embedded', a local HF directory or a hub id")
    add_calibration_arguments(parser, "--text-file")
    parser.add_argument("--threshold", type=float, default=0.8,
                        help="a head is a recency head when window + sink mass >= this")
    parser.add_argument("--out", default=None, help="write the RecencyReport JSON here")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def add_calibration_arguments(parser: argparse.ArgumentParser, text_flag: str) -> None:
    """Knobs shared with `convert`: calibration text, window, sinks, lengths, device."""
    parser.add_argument(text_flag, default=None, help=f"calibration text (default: {DEFAULT_TEXT.name})")
    parser.add_argument("--window", type=int, default=32, help="k: keys before the query that count as recent")
    parser.add_argument("--sink-len", type=int, default=4, help="leading tokens whose mass is the sink mass")
    parser.add_argument("--max-tokens", type=int, default=1024, help="tokens per calibration sequence")
    parser.add_argument("--samples", type=int, default=8, help="calibration sequences at most")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="auto")


def read_text(path: str | None) -> str:
    path = Path(path) if path else DEFAULT_TEXT
    if not path.exists():
        raise ValueError(f"no calibration text at {path}: pass a text file")
    return path.read_text()


def layer_table(report, threshold: float) -> list[dict]:
    from ..recurformer.recency import group_scores, head_scores

    heads, groups = head_scores(report), group_scores(report)
    return [{"layer": l, "recent": sum(report.scores[l]) / len(report.scores[l]),
             "sink": sum(report.sink_mass[l]) / len(report.sink_mass[l]),
             "recency_heads": sum(s >= threshold for s in heads[l]), "heads": len(heads[l]),
             "recency_groups": sum(s >= threshold for s in groups[l]), "groups": len(groups[l])}
            for l in range(len(heads))]


def print_table(rows: list[dict], threshold: float) -> None:
    print(f"layer  recent   sink  heads>={threshold:g}  groups>={threshold:g}")
    for r in rows:
        print(f"{r['layer']:5d}  {r['recent']:.3f}  {r['sink']:.3f}  {r['recency_heads']:4d}/{r['heads']:<4d}"
              f"  {r['recency_groups']:5d}/{r['groups']}")


def run(args: argparse.Namespace) -> dict:
    from ..recurformer.recency import recency_scores

    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    text = read_text(args.text_file)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    report = recency_scores(lm, text, window=args.window, sink_len=args.sink_len, max_tokens=args.max_tokens,
                            max_sequences=args.samples)
    rows = layer_table(report, args.threshold)
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_dict(), indent=1))
    if not args.json:
        print_table(rows, args.threshold)
        if args.out:
            print(f"report saved to {args.out}")
    return {"report": report.to_dict(), "layers": rows}
