"""Text in, text and figures out: tokenize a prompt, run the engine, decode, summarise.

The CLI, the benchmarks and the app all go through here; the figures come from metrics.py.
"""

from __future__ import annotations

from typing import Iterator

from .budget import Budget, solve
from .engine import Sampling, generate
from .metrics import (decode_tokens_per_s, first_sequence_tokens, kv_share_asked, kv_share_reached, tokens_per_s,
                      warmup_s)
from .models import LoadedModel
from .policies.base import Policy
from .prompting import prompt_ids
from .trace import StepRecord


def encode_prompt(lm: LoadedModel, prompt: str, chat: bool = False):
    """Token ids [1, T] of a prompt: raw text with the tokenizer's special tokens, or with `chat`, in the
    tokenizer's chat template when it has one (prompting.py). The last prompt's are kept on the model."""
    if lm.tokenizer is None:
        raise ValueError(f"model {lm.name!r} has no tokenizer")
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty")
    key = (prompt, bool(chat))
    ids = lm.prompt_cache.get(key)
    if ids is None:
        ids = prompt_ids(lm.tokenizer, prompt, chat)
        lm.prompt_cache.clear()  # one prompt; a thread that replaces it meanwhile costs one tokenization
        lm.prompt_cache[key] = ids
    return ids.clone()  # the caller's own: the cached ids never change


def eos_ids(lm: LoadedModel) -> set[int]:
    """The model's end-of-sequence token ids (its generation config may give one or several)."""
    eos = lm.model.generation_config.eos_token_id if lm.model.generation_config else None
    return set([eos] if isinstance(eos, int) else (eos or []))


def stream_generation(lm: LoadedModel, prompt: str, policy: Policy, max_new_tokens: int,
                      sampling: Sampling, budget: Budget | None = None, chat: bool = False,
                      **engine_options) -> Iterator[StepRecord]:
    """The engine's records for one prompt (first row of a batch of one), the policy solved for the
    KV budget when one is given (budget.py; ValueError when it is out of reach). chat: the prompt in the
    tokenizer's chat template when it has one; off by default, so that evaluations read their text raw."""
    input_ids = encode_prompt(lm, prompt, chat)
    policy = solve(policy, budget, input_ids.shape[1], max_new_tokens, lm.config.num_hidden_layers)
    yield from generate(lm, input_ids, policy=policy, max_new_tokens=max_new_tokens, sampling=sampling,
                        eos_token_id=sorted(eos_ids(lm)),
                        pad_token_id=getattr(lm.tokenizer, "pad_token_id", None),
                        **engine_options)


def summarize(lm: LoadedModel, records: list[StepRecord]) -> dict:
    """The CLI's --json fields, computed from a finished run's records."""
    ids = first_sequence_tokens(records)
    first, last = records[0], records[-1]
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
        "tokens_per_s": tokens_per_s(records),
        "decode_tokens_per_s": decode_tokens_per_s(records),  # warm decode steps only (metrics.py)
        "warmup_s": warmup_s(records),
        "policy": first.policy,
        "kv_share_asked": kv_share_asked(records),
        "kv_share_reached": kv_share_reached(records),
    }


def run_generation(lm: LoadedModel, prompt: str, policy: Policy, max_new_tokens: int,
                   sampling: Sampling, budget: Budget | None = None, chat: bool = False, **engine_options) -> dict:
    records = list(stream_generation(lm, prompt, policy, max_new_tokens, sampling, budget, chat, **engine_options))
    return summarize(lm, records)
