"""One generation from text to a summary: tokenize, run the engine, decode, measure.

The CLI, the benchmarks and the app all go through here, so their numbers are computed one way.
"""

from __future__ import annotations

from typing import Iterator

from .engine import Sampling, generate
from .models import LoadedModel
from .policies.base import Policy
from .trace import StepRecord


def encode_prompt(lm: LoadedModel, prompt: str):
    """Token ids [1, T] of a prompt, with the tokenizer's special tokens."""
    if lm.tokenizer is None:
        raise ValueError(f"model {lm.name!r} has no tokenizer")
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty")
    return lm.tokenizer(prompt, return_tensors="pt").input_ids


def eos_ids(lm: LoadedModel) -> set[int]:
    """The model's end-of-sequence token ids (its generation config may give one or several)."""
    eos = lm.model.generation_config.eos_token_id if lm.model.generation_config else None
    return set([eos] if isinstance(eos, int) else (eos or []))


def stream_generation(lm: LoadedModel, prompt: str, policy: Policy, max_new_tokens: int,
                      sampling: Sampling, **engine_options) -> Iterator[StepRecord]:
    """The engine's records for one prompt (first row of a batch of one)."""
    input_ids = encode_prompt(lm, prompt)
    yield from generate(lm, input_ids, policy=policy, max_new_tokens=max_new_tokens, sampling=sampling,
                        eos_token_id=sorted(eos_ids(lm)),
                        pad_token_id=getattr(lm.tokenizer, "pad_token_id", None),
                        **engine_options)


def generated_ids(records: list[StepRecord], eos: set[int] | None = None) -> list[int]:
    """The first row's generated tokens, up to and including its EOS."""
    ids = []
    for record in records:
        ids.append(record.token_ids[0])
        if record.finished[0] and record.token_ids[0] in (eos or set()):
            break
    return ids


def summarize(lm: LoadedModel, records: list[StepRecord]) -> dict:
    """The CLI's --json fields, computed from a finished run's records."""
    ids = generated_ids(records, eos_ids(lm))
    first, last = records[0], records[-1]
    total_s = sum(r.step_time_s for r in records)
    decode_s = sum(r.step_time_s for r in records[1:])
    return {
        "text": lm.tokenizer.decode(ids, skip_special_tokens=True) if lm.tokenizer else "",
        "token_ids": ids,
        "prompt_tokens": first.seen_tokens,
        "prefill_kv_tokens": first.kept_tokens,
        "final_kv_tokens": last.kept_tokens,
        "prefill_kept_positions": first.kept_positions,
        "kv_bytes": last.kv_bytes,
        "peak_kv_bytes": last.peak_kv_bytes,
        "prefill_s": first.step_time_s,
        "tokens_per_s": len(records) / total_s if total_s > 0 else None,
        "decode_tokens_per_s": (len(records) - 1) / decode_s if decode_s > 0 else None,
        "policy": first.policy,
    }


def run_generation(lm: LoadedModel, prompt: str, policy: Policy, max_new_tokens: int,
                   sampling: Sampling) -> dict:
    records = list(stream_generation(lm, prompt, policy, max_new_tokens, sampling))
    return summarize(lm, records)
