"""Reading evaluation: does a KV-cache mode still answer questions about its context?

The held-out reading tasks (assets/reading_eval.jsonl.gz, written by training/make_reading_eval.py from
templates, names and texts the embedded model never saw in training) are prompts in the embedded model's
answer format: a document, a blank line, `Question: ...`, a newline, `Answer:`. The model's greedy
continuation up to its first newline is its answer; it is right when it equals the stored answer
(ignoring case, surrounding spaces and a final full stop).

Each task records its kind (single, multi, two, story, quote), its target length in tokens and, for
single facts, the depth asked for the fact (0 = the document's start, 1 = its end; the fact sits at the
sentence boundary nearest it), so single-fact accuracy can be reported as a length x depth grid. The KV
share each mode reached is measured from the engine's records (metrics.row_kv_share): after the prefill
(slots held over the prompt's length), and averaged over the answer's generation.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import defaultdict
from pathlib import Path


from .engine import generate
from .metrics import generation_kv_share, row_kv_share
from .models import LoadedModel
from .policies.base import Policy
from .recurrent_groups import held_group_shares
from .resources import asset

log = logging.getLogger(__name__)

READING_FILE = asset("reading_eval.jsonl.gz")
MAX_ANSWER_TOKENS = 24  # the longest stored answers ("4821 and 7730", dates, names) take ~12


def load_tasks(path: str | Path = READING_FILE, limit: int | None = None,
               kinds: list[str] | None = None) -> list[dict]:
    """The stored tasks (dicts: kind, prompt, answer, length, depth), at most `limit` per (kind, length,
    depth) cell, only those of `kinds` if given."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no reading tasks at {path}")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        tasks = [json.loads(line) for line in f if line.strip()]
    if kinds:
        stored = sorted({t["kind"] for t in tasks})
        if set(kinds) - set(stored):
            raise ValueError(f"no {sorted(set(kinds) - set(stored))} tasks in {path.name}; it holds {stored}")
        tasks = [t for t in tasks if t["kind"] in kinds]
    if limit:
        seen = defaultdict(int)
        kept = []
        for t in tasks:
            cell = (t["kind"], t["length"], t.get("depth"))
            if seen[cell] < limit:
                kept.append(t)
                seen[cell] += 1
        tasks = kept
    return tasks


def answer_matches(generated: str, answer: str) -> bool:
    """The generated text up to its first newline equals the answer, ignoring case, surrounding spaces
    and a final full stop."""
    first = generated.split("\n", 1)[0].strip().rstrip(".").strip()
    return first.lower() == answer.strip().rstrip(".").strip().lower()


def newline_ids(tokenizer) -> list[int]:
    """Token ids whose text holds a newline: generation stops at the first (the answer's end)."""
    vocab = tokenizer.get_vocab()
    return sorted(i for tok, i in vocab.items() if "\n" in tokenizer.convert_tokens_to_string([tok]))


def answer_batch(lm: LoadedModel, prompts: list[str], policy: Policy | None,
                 stops: list[int]) -> tuple[list[str], list[dict]]:
    """Greedy answers of a batch of prompts (left-padded), and each row's KV share {"prefill": after the
    prefill, "generation": averaged over its answer's steps}."""
    tok = lm.tokenizer
    batch = tok(prompts, return_tensors="pt", padding=True, padding_side="left").to(lm.device)
    lengths = batch.attention_mask.sum(1).tolist()
    records = list(generate(lm, batch.input_ids, attention_mask=batch.attention_mask, policy=policy,
                            max_new_tokens=MAX_ANSWER_TOKENS, eos_token_id=stops, pad_token_id=tok.pad_token_id))
    answers = []
    for row in range(len(prompts)):
        out = []
        for r in records:
            out.append(r.token_ids[row])
            if r.token_ids[row] in stops:
                break
        answers.append(tok.decode(out, skip_special_tokens=True))
    # pads are never held, so a row's share is over its own length; replaced KV groups hold no tokens
    held = held_group_shares(policy.recurrent_modules(lm) if policy else {}, lm.config.num_hidden_layers,
                             lm.config.num_key_value_heads)
    shares = [{"prefill": row_kv_share(records[0], row, n, held),
               "generation": generation_kv_share(records, row, n, held)} for row, n in enumerate(lengths)]
    return answers, shares


def score(lm: LoadedModel, tasks: list[dict], policy: Policy | None = None, batch: int = 8) -> list[dict]:
    """One result per task: its kind, length, depth, the answer given, right or wrong, the KV share after
    the prefill and averaged over the answer's generation."""
    stops = newline_ids(lm.tokenizer) + sorted({lm.tokenizer.eos_token_id} - {None})
    order = sorted(range(len(tasks)), key=lambda i: len(tasks[i]["prompt"]))  # similar lengths share a batch
    results = [None] * len(tasks)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        answers, shares = answer_batch(lm, [tasks[i]["prompt"] for i in idx], policy, stops)
        for i, given, share in zip(idx, answers, shares):
            t = tasks[i]
            results[i] = {"kind": t["kind"], "length": t["length"], "depth": t.get("depth"),
                          "answer": t["answer"], "given": given.split("\n", 1)[0].strip(),
                          "right": answer_matches(given, t["answer"]), "kv_share": share["prefill"],
                          "kv_share_generation": share["generation"]}
        log.info("reading: %d / %d", min(start + batch, len(order)), len(order))
    return results


def summary(results: list[dict]) -> dict:
    """Accuracy per kind, the single-fact grid {length: {depth: accuracy}}, and the mean KV share."""
    by_kind, grid = defaultdict(list), defaultdict(lambda: defaultdict(list))
    for r in results:
        by_kind[r["kind"]].append(r["right"])
        if r["kind"] == "single" and r["depth"] is not None:
            grid[r["length"]][r["depth"]].append(r["right"])
    mean = lambda xs: sum(xs) / len(xs)
    return {
        "accuracy": {k: mean(v) for k, v in sorted(by_kind.items())},
        "count": {k: len(v) for k, v in sorted(by_kind.items())},
        "grid": {str(n): {f"{d:g}": mean(v) for d, v in sorted(row.items())} for n, row in sorted(grid.items())},
        "kv_share": mean([r["kv_share"] for r in results]),
    }
