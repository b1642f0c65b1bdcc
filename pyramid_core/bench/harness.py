"""Speed and memory benchmarks on a GPU, with random weights in the shapes of real models.

Random weights are fine here: how many tokens each layer keeps is fixed by the schedule, not by what
the tokens say. Every suite runs its baselines (transformers' `generate` with the full cache, and the
engine's own full cache) in the same process on the same card as the methods it compares.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from torch.nn.attention import sdpa_kernel

from ..engine import ATTENTION_BACKENDS, generate
from ..models import wrap_model
from ..policies.base import Policy
from ..policies.full import FullPolicy

SHAPES = {  # architecture shapes of public checkpoints (their config.json values)
    "llama2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    "llama2-13b": dict(model_type="llama", hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                       num_attention_heads=40, num_key_value_heads=40, vocab_size=32000),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True),
    "llama3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                        tie_word_embeddings=True, rope_theta=500000.0),
}


def random_model(shape: str, dtype=torch.float16, device="cuda", max_positions: int = 40960):
    """A model of a public shape with random weights, built directly on the device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(SHAPES[shape])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, max_position_embeddings=max_positions)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.generation_config.eos_token_id = None
    return wrap_model(model, name=f"random-{shape}")


def environment() -> dict:
    import transformers

    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "sdpa_backends": [b.name.lower() for b in ATTENTION_BACKENDS],
            "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    from ..joint_projection import JOINT_QKV
    from ..recurformer.rnn import scan_backend
    from ..recurformer.stacked import step_backend
    from ..side_stream import BESIDE

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info["recurformer_scan"] = scan_backend(device)
    info["recurformer_step"] = step_backend(device)  # a stacked layer's decode step: fused kernel or twin
    info["recurformer_joint_qkv"] = JOINT_QKV  # kept heads' q/k/v and the stack's projection as one matmul
    info["beside"] = BESIDE  # a step graph's RecurFormer stack step and H2O pick on a side stream
    return info


@dataclass
class Run:
    method: str
    batch: int
    prompt_tokens: int
    new_tokens: int
    seconds: float
    tokens_per_s: float
    peak_memory_gb: float
    kv_gb: float | None          # bytes the cache holds at the end (spare block slots included)
    prefill_s: float | None = None
    kv_tokens_gb: float | None = None  # bytes of the tokens held at the end (no spare slots)
    # what the caching allocator held at its peak: the memory cap counts this, fragmentation included
    peak_reserved_gb: float | None = None


def random_adapter(lm, share: float, directory: Path) -> str:
    """An untrained RecurFormer adapter replacing `share` of the KV groups, spread over the layers
    (memory and speed do not depend on which groups or on training)."""
    groups = spread_groups(lm.config.num_hidden_layers, lm.config.num_key_value_heads, share)
    return untrained_adapter(lm, groups, directory)


def spread_groups(layers: int, kv_heads: int, share: float) -> list[list[int]]:
    """`share` of the [layer, group]s: one group per layer, evenly over the layers, before any layer
    loses a second."""
    wanted, groups = round(share * layers * kv_heads), []
    for shift in range(kv_heads):
        take = min(layers, wanted - len(groups))
        hit = sorted({i * layers // take for i in range(take)}) if take else []
        groups += [[layer, (layer + shift) % kv_heads] for layer in hit]
    return sorted(groups)


def untrained_adapter(lm, groups: list[list[int]], directory: Path) -> str:
    """An adapter whose [layer, group]s are recurrences at their initialisation (no training)."""
    from ..recurformer.adapter import Adapter, rnn_config, save_adapter
    from ..recurformer.rnn import GroupRNN, RNNConfig

    rnn_cfg = rnn_config(lm).to_dict()
    base, state = lm.model.model, {}
    for layer, group in groups:
        rnn = GroupRNN.from_attention(base.layers[layer].self_attn, base.rotary_emb, group, RNNConfig(**rnn_cfg))
        state.update({f"{layer}.{group}.{k}": v.float().cpu() for k, v in rnn.state_dict().items()})
    save_adapter(Adapter(lm.name, groups, rnn_cfg, state), directory)
    return str(directory)


def cap_memory(gb: float) -> None:
    """Let this process use at most `gb` GB (1e9 bytes) of the GPU, as the paper's Table 1 runs an 80 GB card:
    past it an allocation raises out-of-memory, which the largest-batch searches read as "does not fit"."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gb * 1e9 / total))


def _reset():
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()


def random_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab, (batch, length), generator=gen).cuda()


def full_kv_gb(lm, batch: int, tokens: int) -> float:
    cfg = lm.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * batch * tokens * cfg.num_key_value_heads * head_dim \
        * lm.dtype.itemsize / 1e9


def run_hf(lm, batch: int, prompt_len: int, new_tokens: int) -> Run:
    """transformers' generate, greedy, full dynamic cache: the paper's "HF Accelerate" baseline."""
    ids = random_prompts(batch, prompt_len, lm.config.vocab_size)
    _reset()
    start = time.perf_counter()
    # the engine's SDPA backends for transformers too, so that the baselines differ only in their loops
    with torch.inference_mode(), sdpa_kernel(ATTENTION_BACKENDS):
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    generated = (out.shape[1] - prompt_len) * batch
    return Run("hf-generate", batch, prompt_len, new_tokens, seconds, generated / seconds,
               torch.cuda.max_memory_allocated() / 1e9, full_kv_gb(lm, batch, prompt_len + new_tokens - 1),
               peak_reserved_gb=torch.cuda.max_memory_reserved() / 1e9)


def run_engine(lm, policy: Policy, method: str, batch: int, prompt_len: int, new_tokens: int,
               cuda_graphs: bool = True, decode_kernel: bool = True, reserve_kv: bool = False) -> Run:
    """The engine, greedy. reserve_kv: each layer's KV sized once after its prefill (cache.py), so
    kv_gb is the reserve, taken from the prefill on."""
    ids = random_prompts(batch, prompt_len, lm.config.vocab_size)
    _reset()
    start = time.perf_counter()
    records = list(generate(lm, ids, policy=policy, max_new_tokens=new_tokens, cuda_graphs=cuda_graphs,
                            decode_kernel=decode_kernel, reserve_kv=reserve_kv))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    held_tokens = sum(sum(row) for row in records[-1].kept_tokens_per_row)
    per_token_layer = full_kv_gb(lm, 1, 1) / lm.config.num_hidden_layers
    return Run(method, batch, prompt_len, new_tokens, seconds, len(records) * batch / seconds,
               torch.cuda.max_memory_allocated() / 1e9, records[-1].kv_bytes / 1e9,
               prefill_s=records[0].step_time_s, kv_tokens_gb=held_tokens * per_token_layer,
               peak_reserved_gb=torch.cuda.max_memory_reserved() / 1e9)


def guarded(fn, *args) -> Run | None:
    """Run a benchmark; an out-of-memory error is a result (None), not a crash."""
    try:
        return fn(*args)
    except torch.OutOfMemoryError:
        _reset()
        return None


def warm_up(lm, policies: list[Policy] = (), reserve_kv: bool = False):
    """One short run of each method first: CUDA context, cuBLAS plans and Triton compilation are not
    what the benchmark measures. reserve_kv: the engine runs reserve their KV, as the measured ones will."""
    run_hf(lm, 1, 32, 4)
    for policy in [FullPolicy(), *policies]:
        run_engine(lm, policy, "warmup", 2, 600, 40, reserve_kv=reserve_kv)


def best_of(runs: int, fn, *args) -> Run:
    """The fastest of a few identical runs: the machine's other load only ever slows a run down."""
    return max((fn(*args) for _ in range(runs)), key=lambda r: r.tokens_per_s)


def write(results: dict, out_dir: Path, name: str, table: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1, default=lambda o: o.__dict__))
    env = results["environment"]
    header = f"# {name}\n\n{env.get('gpu', 'cpu')}, {env['date']}, torch {env['torch']}, " \
             f"transformers {env['transformers']}, triton {env.get('triton')}\n\n"
    (out_dir / f"{name}.md").write_text(header + table + "\n")


def runs_table(runs: list[Run | dict]) -> str:
    rows = ["| method | batch | prompt+new | tokens/s | peak GB | reserved GB | KV GB held | KV GB of tokens "
            "| prefill s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        r = r if isinstance(r, dict) else r.__dict__
        kv = f"{r['kv_gb']:.2f}" if r.get("kv_gb") is not None else "-"
        pre = f"{r['prefill_s']:.3f}" if r.get("prefill_s") is not None else "-"
        tok = f"{r['kv_tokens_gb']:.2f}" if r.get("kv_tokens_gb") is not None else kv
        reserved = f"{r['peak_reserved_gb']:.2f}" if r.get("peak_reserved_gb") is not None else "-"
        rows.append(f"| {r['method']} | {r['batch']} | {r['prompt_tokens']}+{r['new_tokens']} | "
                    f"{r['tokens_per_s']:.1f} | {r['peak_memory_gb']:.2f} | {reserved} | {kv} | {tok} | {pre} |")
    return "\n".join(rows)
