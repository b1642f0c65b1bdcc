"""One model over the GPUs of one host (accelerate device_map): same tokens as one GPU, and a model too big for one.

    python benchmarks/multi_gpu.py --out /tmp/multi_gpu          # two GPUs, ~3 minutes
    python benchmarks/multi_gpu.py --tiny --out /tmp/multi_tiny  # CPU, tiny shapes, seconds (tests)

Part "1b": a random Llama-3.2-1B-shape model saved as a checkpoint and loaded through load_model three
ways: on one GPU, with device_map="auto" (transformers balances the layers over both GPUs) and with an
explicit map (first half of the layers on GPU 0, the rest with the norm and lm_head on GPU 1). Greedy
tokens of the baseline and PyramidInfer must be equal across the three; tokens/s is reported.
Part "70b": a random Llama-2-70B-shape model in bf16 (about 138 GB of weights) built on the meta device
and materialised layer by layer on its GPU; baseline and PyramidInfer runs with tokens/s and each GPU's
peak memory, and whether the run would fit one card. Each part is wrapped: a failure is written down
with its error and the other part still runs. Results: <out>/multi_gpu.json and multi_gpu.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyramid_core import generate, load_model, wrap_model  # noqa: E402
from pyramid_core.metrics import decode_tokens_per_s  # noqa: E402
from pyramid_core.policies.full import FullPolicy  # noqa: E402
from pyramid_core.policies.pyramid import PyramidPolicy  # noqa: E402

LLAMA_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=8192, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True)
LLAMA_70B = dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                 intermediate_size=28672, vocab_size=32000)
TINY = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=97)
POLICIES = {"baseline": FullPolicy, "pyramid": PyramidPolicy}


def settings(tiny: bool) -> dict:
    """Devices and sizes; --tiny runs the same code on the CPU with a small model and short prompts."""
    if tiny:
        return dict(devices=["cpu", "cpu"], dtype=torch.float32, small=TINY, big=TINY, batch=2, prompt=160,
                    new=8, big_runs=[(1, 160), (2, 160)])
    # (batch, prompt): the last run's full cache (~21 GB) with the weights (~138 GB) exceeds one H200
    return dict(devices=["cuda:0", "cuda:1"], dtype=torch.bfloat16, small=LLAMA_1B, big=LLAMA_70B, batch=4,
                prompt=1000, new=32, big_runs=[(1, 1000), (8, 1000), (16, 4000)], big_new=64)


def llama_config(shape: dict, max_positions: int = 8192):
    from transformers import LlamaConfig

    return LlamaConfig(**shape, max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=None)


def split_map(num_layers: int, first, second) -> dict:
    """Embeddings and the first half of the layers on `first`; the rest, the final norm and lm_head on `second`."""
    layers = {f"model.layers.{i}": first if i < num_layers // 2 else second for i in range(num_layers)}
    return {"model.embed_tokens": first, "model.rotary_emb": first, **layers, "model.norm": second,
            "lm_head": second}


def prompts(batch: int, length: int, vocab: int, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(3, vocab, (batch, length), generator=gen).to(device)


def sync(devices) -> None:
    for d in {torch.device(d) for d in devices}:
        if d.type == "cuda":
            torch.cuda.synchronize(d)


def timed_run(lm, policy_name: str, batch: int, prompt: int, new: int, devices) -> dict:
    """One greedy generation after a warm-up run of the same shape (Triton compiles, cuBLAS plans)."""
    ids = prompts(batch, prompt, lm.config.vocab_size, lm.device)
    list(generate(lm, ids[:, :64], policy=POLICIES[policy_name](), max_new_tokens=4))
    gpus = [torch.device(d) for d in dict.fromkeys(devices) if torch.device(d).type == "cuda"]
    gc.collect()
    for d in gpus:
        torch.cuda.reset_peak_memory_stats(d)
    sync(devices)
    start = time.perf_counter()
    records = list(generate(lm, ids, policy=POLICIES[policy_name](), max_new_tokens=new))
    sync(devices)
    seconds = time.perf_counter() - start
    return {"policy": policy_name, "batch": batch, "prompt": prompt, "new_tokens": len(records),
            "tokens": [r.token_ids for r in records], "seconds": round(seconds, 3),
            "tokens_per_s": round(len(records) * batch / seconds, 1),
            "decode_tokens_per_s": round(decode_tokens_per_s(records) or 0.0, 1),
            "prefill_s": round(records[0].step_time_s, 3), "kv_gb_end": round(records[-1].kv_bytes / 1e9, 3),
            "peak_gb_per_gpu": {str(d): round(torch.cuda.max_memory_allocated(d) / 1e9, 2) for d in gpus}}


# ----------------------------------------------------------------------------- part 1: the 1B shape

def save_random_checkpoint(shape: dict, dtype, device, directory: Path) -> None:
    """A random-weight checkpoint (safetensors) with the embedded model's tokenizer, for load_model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pyramid_core.models import EMBEDDED_DIR

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(llama_config(shape), dtype=dtype)
    model.generation_config.eos_token_id = None
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(EMBEDDED_DIR).save_pretrained(directory)  # ids are fed directly; load_model wants one
    del model


def part_1b(s: dict) -> dict:
    first, second = s["devices"]
    with tempfile.TemporaryDirectory() as tmp:
        save_random_checkpoint(s["small"], s["dtype"], first, Path(tmp))
        layers = s["small"]["num_hidden_layers"]
        gpu_index = (lambda d: int(d.split(":")[1])) if first.startswith("cuda") else (lambda d: d)
        loads = {"one_gpu": dict(device=first),
                 "auto": dict(device_map="auto"),
                 "explicit": dict(device_map=split_map(layers, gpu_index(first), gpu_index(second)))}
        out = {}
        for name, kwargs in loads.items():
            lm = load_model(tmp, dtype=s["dtype"], **kwargs)
            out[name] = {"placement": [str(d) for d in lm.placement.layers],
                         "runs": [timed_run(lm, p, s["batch"], s["prompt"], s["new"], s["devices"]) for p in POLICIES]}
            del lm
            free()
    for name in ("auto", "explicit"):
        for run, ref in zip(out[name]["runs"], out["one_gpu"]["runs"]):
            run["tokens_equal_one_gpu"] = run["tokens"] == ref["tokens"]
    return out


# ----------------------------------------------------------------------------- part 2: the 70B shape

def materialise(shape: dict, dtype, devices: list[str]):
    """The model built on the meta device, then each module made on its device and filled there with
    small random normals (norm weights 1): 138 GB never passes through the host."""
    from transformers import AutoModelForCausalLM

    config = llama_config(shape)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    base, gen = model.model, torch.Generator(device="cpu").manual_seed(0)
    placed = split_map(config.num_hidden_layers, *devices)
    for name, device in placed.items():
        module = model.get_submodule(name)
        if name == "model.rotary_emb":  # its inv_freq is computed, not a weight: computed again, for real
            with torch.device("cpu"):
                base.rotary_emb = type(module)(config=config).to(device)
            continue
        module.to_empty(device=device)
        with torch.no_grad():
            for pname, p in module.named_parameters():
                if pname.endswith("norm.weight") or name == "model.norm":
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02, generator=torch.Generator(device=p.device).manual_seed(
                        int(torch.randint(1 << 30, (1,), generator=gen))))
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.eos_token_id = None
    return wrap_model(model, name="random-llama2-70b")


def part_70b(s: dict) -> dict:
    lm = materialise(s["big"], s["dtype"], s["devices"])
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    gpu = torch.device(s["devices"][0])
    card = torch.cuda.get_device_properties(gpu).total_memory if gpu.type == "cuda" else None
    out = {"weights_gb": round(weights / 1e9, 1), "one_card_gb": card and round(card / 1e9, 1),
           "placement": [str(d) for d in lm.placement.layers], "runs": []}
    for batch, prompt in s["big_runs"]:
        for policy in POLICIES:
            try:
                run = timed_run(lm, policy, batch, prompt, s.get("big_new", s["new"]), s["devices"])
            except torch.OutOfMemoryError as err:
                run = {"policy": policy, "batch": batch, "prompt": prompt, "error": str(err).splitlines()[0]}
                free()
            else:
                # weights + the cache held at the end is a lower bound of what one card would need
                run["needs_gb_at_least"] = round((weights + run["kv_gb_end"] * 1e9) / 1e9, 1)
                run["fits_one_card"] = None if card is None else weights + run["kv_gb_end"] * 1e9 < card
                del run["tokens"]
            out["runs"].append(run)
    del lm
    free()
    return out


# ----------------------------------------------------------------------------- report

def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def guarded(part, s: dict) -> dict:
    """A part's results, or its error text: one part failing never loses the other's."""
    try:
        return part(s)
    except Exception as err:  # noqa: BLE001 -- written into the results, with the traceback's tail
        free()
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}


def markdown(results: dict) -> str:
    lines = ["# One model over two GPUs (benchmarks/multi_gpu.py)", "", f"{results['environment']}", ""]
    one = results["1b"]
    lines += ["## Llama-3.2-1B shape, random weights: one GPU against device_map", ""]
    if "error" in one:
        lines += [f"failed: {one['error']}", ""]
    else:
        lines += ["| placement | policy | batch x prompt + new | tokens/s | decode tokens/s | tokens equal one GPU |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, part in one.items():
            for r in part["runs"]:
                lines.append(f"| {name} | {r['policy']} | {r['batch']} x {r['prompt']} + {r['new_tokens']} | "
                             f"{r['tokens_per_s']} | {r['decode_tokens_per_s']} | {r.get('tokens_equal_one_gpu', '-')} |")
        lines.append("")
    big = results["70b"]
    lines += ["## Llama-2-70B shape, random weights, bf16, over two GPUs", ""]
    if "error" in big:
        return "\n".join(lines + [f"failed: {big['error']}", ""])
    lines += [f"weights {big['weights_gb']} GB; one card {big['one_card_gb']} GB", "",
              "| policy | batch x prompt + new | tokens/s | decode tokens/s | prefill s | peak GB per GPU "
              "| KV GB at end | needs on one card (GB, at least) | fits one card |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in big["runs"]:
        if "error" in r:
            lines.append(f"| {r['policy']} | {r['batch']} x {r['prompt']} | {r['error']} | | | | | | |")
            continue
        peaks = ", ".join(f"{d}: {gb}" for d, gb in r["peak_gb_per_gpu"].items())
        lines.append(f"| {r['policy']} | {r['batch']} x {r['prompt']} + {r['new_tokens']} | {r['tokens_per_s']} | "
                     f"{r['decode_tokens_per_s']} | {r['prefill_s']} | {peaks} | {r['kv_gb_end']} | "
                     f"{r['needs_gb_at_least']} | {r['fits_one_card']} |")
    return "\n".join(lines + [""])


def environment() -> str:
    import transformers

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"torch {torch.__version__}, transformers {transformers.__version__}, GPUs: {gpus or 'none (CPU)'}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for multi_gpu.json and multi_gpu.md")
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny shapes: checks the script in seconds")
    parser.add_argument("--parts", default="1b,70b", help="comma-separated: 1b, 70b")
    args = parser.parse_args(argv)
    if not args.tiny and torch.cuda.device_count() < 2:
        parser.error("needs two CUDA devices (or --tiny)")
    s = settings(args.tiny)
    parts = {"1b": part_1b, "70b": part_70b}
    results = {"environment": environment(), "tiny": args.tiny}
    for name in args.parts.split(","):
        start = time.perf_counter()
        results[name] = guarded(parts[name], s)
        print(f"part {name}: {time.perf_counter() - start:.1f} s{' FAILED' if 'error' in results[name] else ''}",
              flush=True)
    for name in parts:
        results.setdefault(name, {"error": "not run (--parts)"})
    args.out.mkdir(parents=True, exist_ok=True)
    for part in results.get("1b", {}).values():  # token lists are for the comparison, not the report
        for run in part.get("runs", []) if isinstance(part, dict) else []:
            run.pop("tokens", None)
    (args.out / "multi_gpu.json").write_text(json.dumps(results, indent=1))
    (args.out / "multi_gpu.md").write_text(markdown(results))
    return results


if __name__ == "__main__":
    main()
