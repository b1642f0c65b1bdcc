"""A real CUDA out-of-memory in a request, handled as the app handles it: memory back, model kept.

    python benchmarks/oom_gpu.py --out /tmp/oom          # one GPU, well under a minute
    python benchmarks/oom_gpu.py --tiny --out /tmp/oom   # CPU: the out-of-memory is raised by hand (tests)

The request runs inside pyramid_core.out_of_memory.released_on_oom, the handling the app's error
boundary (studio/errors.py user_errors) wraps around every handler: the run's memory is freed and the
user gets one sentence. A random Llama-3.2-1B-shape model (bf16) gets a batch x prompt whose prefill
needs more than the card; recorded: the sentence, torch.cuda.memory_allocated before and after (equal:
only the model stays), and that a normal request afterwards succeeds. Results: <out>/oom_gpu.json, .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyramid_core import generate, wrap_model  # noqa: E402
from pyramid_core.out_of_memory import RunOutOfMemory, released_on_oom  # noqa: E402
from pyramid_core.policies.full import FullPolicy  # noqa: E402

# (batch, prompt) of the request too big for a card: its prefill's MLP activations alone
# (256 x 8192 tokens x 8192 wide x 2 bytes, several at once) and cache (~69 GB) exceed 141 GB
TOO_BIG = (256, 8192)
NORMAL = (1, 256, 16)  # batch, prompt, new tokens


class ExhaustingPolicy(FullPolicy):
    """--tiny only: on a CPU nothing runs out of memory, so the first layer's answer raises the error
    torch raises on a GPU, after the cache has taken memory (which must be freed)."""

    def prefill(self, ctx):
        raise torch.OutOfMemoryError("CUDA out of memory (raised by hand: --tiny)")


def build(tiny: bool):
    if tiny:
        from transformers import LlamaConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, vocab_size=97, max_position_embeddings=512)
        return wrap_model(AutoModelForCausalLM.from_config(config), name="tiny")
    from pyramid_core.bench.harness import random_model

    return random_model("llama3.2-1b", dtype=torch.bfloat16, device="cuda", max_positions=TOO_BIG[1] + 64)


def allocated(lm) -> int:
    return torch.cuda.memory_allocated(lm.device) if lm.device.type == "cuda" else 0


def request(lm, batch: int, prompt: int, new: int, policy) -> dict:
    """One request inside the app's out-of-memory handling: what the user sees, and the memory after."""
    ids = torch.randint(3, lm.config.vocab_size, (batch, prompt), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    try:
        with released_on_oom("oom_gpu request"):
            records = list(generate(lm, ids.to(lm.device), policy=policy, max_new_tokens=new))
    except RunOutOfMemory as err:
        return {"batch": batch, "prompt": prompt, "ok": False, "message": str(err),
                "seconds": round(time.perf_counter() - start, 2), "allocated_after": allocated(lm)}
    return {"batch": batch, "prompt": prompt, "ok": True, "new_tokens": len(records),
            "seconds": round(time.perf_counter() - start, 2), "allocated_after": allocated(lm)}


def run(tiny: bool) -> dict:
    lm = build(tiny)
    warm = request(lm, *NORMAL, FullPolicy())  # cuBLAS's workspace, kept for the process, is taken here
    before = allocated(lm)
    big = request(lm, *(TOO_BIG if not tiny else (2, 64)), 4, ExhaustingPolicy() if tiny else FullPolicy())
    normal = request(lm, *NORMAL, FullPolicy())
    return {"device": torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda" else "cpu",
            "card_gb": round(torch.cuda.get_device_properties(lm.device).total_memory / 1e9, 1)
            if lm.device.type == "cuda" else None,
            "allocated_before": before, "warm_up_ok": warm["ok"], "too_big": big, "normal_after": normal,
            "model_still_loaded": lm.device.type == ("cpu" if tiny else "cuda"),
            "memory_back": big["allocated_after"] == before, "tiny": tiny}


def markdown(r: dict) -> str:
    big, normal = r["too_big"], r["normal_after"]
    return "\n".join([
        "# A CUDA out-of-memory in a request (benchmarks/oom_gpu.py)", "",
        f"{r['device']}, card {r['card_gb']} GB", "",
        f"- request {big['batch']} x {big['prompt']} tokens: {'ran' if big['ok'] else 'out of memory'} "
        f"after {big['seconds']} s; the user reads: \"{big.get('message')}\"",
        f"- memory_allocated before {r['allocated_before'] / 1e9:.3f} GB, after {big['allocated_after'] / 1e9:.3f} GB "
        f"(back to the level before the request: {r['memory_back']}; model still loaded: {r['model_still_loaded']})",
        f"- the next request ({normal['batch']} x {normal['prompt']} + {NORMAL[2]}): "
        f"{'succeeded' if normal['ok'] else 'FAILED'} in {normal['seconds']} s", ""])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for oom_gpu.json and oom_gpu.md")
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny model, the error raised by hand")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("needs a CUDA device (or --tiny)")
    results = run(args.tiny)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "oom_gpu.json").write_text(json.dumps(results, indent=1))
    (args.out / "oom_gpu.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
