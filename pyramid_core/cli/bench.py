"""Benchmark speed and memory on the GPU (random weights in real models' shapes); writes benchmarks/."""

from __future__ import annotations

import argparse

import torch

from ..bench.suites import NO_GPU, SUITES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=list(SUITES))
    parser.add_argument("--out", default="benchmarks")
    parser.add_argument("--memory-cap-gb", type=float, default=80.0,
                        help="cap the process's GPU memory (the paper's A100-80GB) for max-batch runs")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes to try")
    parser.add_argument("--methods", default=None, help="table1: comma-separated methods for the max-batch search")
    parser.add_argument("--batch32-methods", default=None, help="table1: comma-separated methods at batch 32")
    parser.add_argument("--skip-max-batch", action="store_true", help="table1: batch 32 only")
    parser.add_argument("--reserve-kv", action="store_true",
                        help="table1, modes: engine runs size each layer's KV once for the request (never "
                             "reallocated; policies silent at decode then run a step as one CUDA graph); "
                             "hf-generate rows cannot")
    parser.add_argument("--quick", action="store_true", help="modes: 64 new tokens instead of --new-tokens")
    parser.add_argument("--new-tokens", type=int, default=256, help="modes: tokens generated per run")
    parser.add_argument("--shapes", default=None, help="modes: comma-separated shapes (embedded, llama3.2-1b, llama2-7b)")
    parser.add_argument("--modes", default=None, help="modes: comma-separated modes (default: every mode); also h2o-slot and h2o-position, H2O on one decode path each")
    parser.add_argument("--prompts", default=None, help="modes: comma-separated prompt lengths (default 1024,8192)")
    parser.add_argument("--policy-tokens", type=int, default=None,
                        help="modes: tokens of the batch-1 run that times the policy (default: as the measured runs); "
                             "400 reaches PyramidInfer's decode-time cuts after a 1k prompt (the first at step 277)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="modes: interleaved rounds per cell; the median and the paired ratio are reported")
    parser.add_argument("--min-decode-s", type=float, default=0.5,
                        help="modes: more rounds (up to 15) until every mode of a cell has decoded this many seconds "
                             "in all; 0 runs --repeats only")


def run(args: argparse.Namespace) -> dict:
    if args.suite not in NO_GPU and not torch.cuda.is_available():
        raise ValueError("the benchmarks need a CUDA GPU")
    return SUITES[args.suite](args)
