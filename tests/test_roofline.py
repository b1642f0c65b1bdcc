"""`bench roofline` (issue 19): the bytes a batch-1 decode step must read, and the bandwidth a measured
step time achieves against the card's. The GPU measurement itself runs on the device machine."""

import argparse

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pyramid_core.bench import roofline
from pyramid_core.bench.suites import SUITES
from pyramid_core.cli.bench import add_arguments


def llama(tied: bool) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(config).to(torch.bfloat16)


def test_weights_read_leave_out_an_untied_embedding_table_only():
    # per layer: q 32x32, k and v 32x16 each, o 32x32, gate, up, down 32x64 each, two norms of 32
    layer = 32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64 + 2 * 32
    head, norm = 100 * 32, 32
    assert roofline.weight_bytes_read(llama(tied=False)) == 2 * (2 * layer + norm + head)
    assert roofline.weight_bytes_read(llama(tied=True)) == 2 * (2 * layer + norm + head)  # the head reads it all


def test_kv_bytes_are_keys_and_values_of_every_layer_and_sequence():
    config = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32)
    # Llama-2-7B: 0.5 MiB of bf16 keys and values a token
    assert roofline.kv_bytes_read(config, batch=1, tokens=1, itemsize=2) == 2 * 32 * 32 * 128 * 2 == 524288
    assert roofline.kv_bytes_read(config, batch=3, tokens=10.5, itemsize=2) == 524288 * 3 * 10.5


def test_the_row_divides_bytes_by_the_step_time():
    row = roofline.roofline_row(weights=12_000_000_000, kv=600_000_000, step_s=0.006, card_gbs=4800, copy_gbs=4200)
    assert row["achieved_gbs"] == 2100.0  # 12.6 GB in 6 ms
    assert row["roofline_share"] == pytest.approx(2100 / 4800, abs=1e-3)
    assert row["share_of_copy"] == pytest.approx(0.5, abs=1e-3)
    assert row["floor_ms"] == pytest.approx(12.6 / 4800 * 1e3, abs=1e-3)
    unknown = roofline.roofline_row(12_000_000_000, 0, 0.006, None, 4200)
    assert unknown["roofline_share"] is None and unknown["floor_ms"] is None


def test_card_bandwidth_by_name():
    assert roofline.card_bandwidth_gbs("NVIDIA H200") == 4800
    assert roofline.card_bandwidth_gbs("NVIDIA H100 80GB HBM3") == 3350
    assert roofline.card_bandwidth_gbs("NVIDIA H100 PCIe") == 2000
    assert roofline.card_bandwidth_gbs("Some Future GPU") is None


def test_the_suite_is_a_bench_command_and_its_table_has_every_row():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["roofline"]).suite == "roofline" and "roofline" in SUITES
    rows = [{"path": "whole-step graph", "batch": 1, "prompt": p, "new_tokens": 256, "tokens_per_s": 150.0, "gpu_busy_share": 0.8,
             **roofline.roofline_row(13_000_000_000, 5e8, 0.0066, 4800, 4300)} for p in (1024, 8192)]
    lines = roofline.table(rows).splitlines()
    assert len(lines) == 4 and "| whole-step graph | 1 | 8192 | 150.0 |" in lines[3] and "42.6%" in lines[3]
