"""Replace KV groups with linear RNNs trained by attention transfer and save a RecurFormer adapter.

Choose the groups by recency (--replace FRACTION: that share of all KV groups, highest recency
first) or name them (--groups "layer:group,layer:group"). The adapter directory is then passed to
`generate --adapter DIR` or load_model(..., adapter=DIR). --distill-steps N adds a second stage,
end-to-end distillation of the model's next-token distribution; --init-adapter DIR starts from an
earlier adapter's weights.
"""

from __future__ import annotations

import dataclasses

import argparse

from ..models import EMBEDDED_NAME, load_model
from .recency import add_calibration_arguments, read_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=EMBEDDED_NAME, help="'embedded', a local HF directory or a hub id")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--replace", type=float, help="share of all KV groups to replace, in [0, 1]")
    which.add_argument("--groups", help='explicit groups, "layer:group,layer:group"')
    parser.add_argument("--out", required=True, help="adapter directory to write")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--loss", default="attn", choices=["attn", "o_proj"],
                        help="match the attention output (attn) or its image through o_proj")
    parser.add_argument("--init-decay", type=float, default=0.95)
    parser.add_argument("--distill-steps", type=int, default=0,
                        help="then distil the whole model's next-token distribution (KL) for this many steps")
    parser.add_argument("--distill-lr", type=float, default=1e-4)
    parser.add_argument("--taps", type=int, default=None,
                        help="values the output reads directly (1 = the token's own; default 1, or the init adapter's)")
    parser.add_argument("--init-adapter", default=None,
                        help="start from this adapter's trained RNNs (same groups); --steps 0 skips attention transfer")
    add_calibration_arguments(parser, "--calibration-file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")


def parse_groups(text: str) -> list[list[int]]:
    try:
        pairs = [[int(n) for n in item.split(":")] for item in text.split(",") if item.strip()]
    except ValueError:
        pairs = None
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(f'--groups must look like "3:0,5:1" (layer:kv_group), got {text!r}')
    return pairs


def run(args: argparse.Namespace) -> dict:
    from ..recurformer.adapter import save_adapter
    from ..recurformer.convert import convert
    from ..recurformer.recency import choose_groups, recency_scores

    explicit = parse_groups(args.groups) if args.groups is not None else None
    if explicit is None and not 0.0 <= args.replace <= 1.0:
        raise ValueError(f"--replace must be in [0, 1], got {args.replace}")
    text = read_text(args.calibration_file)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    report = None
    if explicit is None:
        report = recency_scores(lm, text, window=args.window, sink_len=args.sink_len,
                                max_tokens=args.max_tokens, max_sequences=args.samples)
        groups = choose_groups(report, fraction=args.replace)
        report = dataclasses.replace(report, replaced=groups)
    else:
        groups = explicit
    adapter = convert(lm, groups, text, steps=args.steps, lr=args.lr, loss=args.loss, init_decay=args.init_decay,
                      max_tokens=args.max_tokens, max_sequences=args.samples, progress=not args.json,
                      distill_steps=args.distill_steps, distill_lr=args.distill_lr, init_adapter=args.init_adapter,
                      taps=args.taps)
    adapter.stats["calibration_file"] = args.calibration_file or "assets/calibration.txt"
    if report is not None:
        adapter.stats["recency"] = report.to_dict()
    save_adapter(adapter, args.out)
    if not args.json:
        print(f"{len(groups)} KV groups replaced; adapter saved to {args.out}")
        for name, s in adapter.stats["groups"].items():
            print(f"  group {name}: loss {s['initial_loss']:.4g} -> {s['final_loss']:.4g}")
        if "distill" in adapter.stats:
            d = adapter.stats["distill"]
            print(f"  distillation: KL {d['kl_before']:.4g} -> {d['kl_after']:.4g} ({d['steps']} steps)")
    return {"out": str(args.out), "groups": groups, "stats": adapter.stats}
