"""Generate text from a prompt with a KV-cache mode and report what the cache held."""

from __future__ import annotations

import argparse

from ..engine import Sampling
from ..models import EMBEDDED_NAME, load_model
from ..policies.registry import MODES, add_policy_arguments, policy_from_args
from ..pipeline import run_generation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=EMBEDDED_NAME, help="'embedded', a local HF directory or a hub id")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--mode", default="baseline", choices=sorted(MODES))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                        help="wrap the prompt in the tokenizer's chat template when it has one (instruct models; "
                             "the default); --no-chat sends the raw text")
    parser.add_argument("--reserve-kv", action="store_true",
                        help="size each layer's KV once for the whole request (never reallocated); on a GPU the "
                             "decode steps whose policy needs no tensor of the step then run as one CUDA graph. "
                             "kv_bytes is then the reserve, taken at the prefill")
    add_policy_arguments(parser)


def run(args: argparse.Namespace) -> dict:
    policy, budget = policy_from_args(args)  # knobs and the budget are checked before any weights are read
    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    result = run_generation(lm, args.prompt, policy, args.max_new_tokens, sampling, budget, args.chat,
                            reserve_kv=args.reserve_kv)
    if not args.json:
        print(result["text"])
    return result
