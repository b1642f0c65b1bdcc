"""How much of a model's reading is the reading, and how much is remembering training's vocabulary.

The same kinds of tasks, over the same held-out documents (the corpus's validation texts), built once from
the training pools (names, templates, story vocabulary training has seen) and once from the held-out
pools (what evaluation uses). A model that reads answers both alike; one that learned its training
phrasings answers the first far better. Run 5 (2026-11-30): stories 70% from training pools, 30% from
held-out ones; single facts 92.5% and 95% (benchmarks/reading_run5_gpu.md).

    python3 training/pool_gap.py MODEL [MODEL ...] [--n 40] [--kinds story,single,two,multi] [--device cuda]

The answer is right when every answer token and its newline are the model's argmax (teacher-forced, as
train_embedded.py's check): the greedy answer.
"""
import argparse
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reading_tasks import TaskMaker  # noqa: E402
from train_embedded import encode_task, read_docs, read_sources, reading_texts  # noqa: E402


@torch.no_grad()
def answers(model, tok, task, bos, eos) -> bool:
    """Whether every answer token of the task and its newline are the model's argmax (teacher-forced)."""
    ids, mask = encode_task(tok, task, bos, eos)
    row = torch.tensor([ids], device=model.device)
    pred = model(input_ids=row[:, :-1]).logits.argmax(-1)[0]
    answer = torch.tensor(mask[1:], device=model.device, dtype=torch.bool)
    return bool((pred[answer] == row[0, 1:][answer]).all())


def accuracy(model, tok, maker, kind, n, lengths, bos, eos, seed):
    """Share of n tasks of this kind whose answer the model gives greedily."""
    rng = random.Random(seed)
    return sum(answers(model, tok, maker.make(kind, rng.randint(*lengths)), bos, eos) for _ in range(n)) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default=".data")
    ap.add_argument("--n", type=int, default=40, help="tasks per model, pool and kind")
    ap.add_argument("--kinds", default="story,single,two,multi")
    ap.add_argument("--lengths", default="300,900", help="document tokens, min,max")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    from transformers import AutoTokenizer, LlamaForCausalLM

    data = Path(args.data)
    docs = read_docs(str(data / "corpus_val.txt"))
    texts = reading_texts(docs, read_sources(str(data / "corpus_val_sources.txt"), len(docs)))
    lengths = tuple(int(x) for x in args.lengths.split(","))
    rows = []
    for path in args.models:
        hf_tok = AutoTokenizer.from_pretrained(path)
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).to(args.device).eval()
        tok, bos, eos = hf_tok.backend_tokenizer, hf_tok.bos_token_id, hf_tok.eos_token_id
        for kind in args.kinds.split(","):
            row = {"model": path, "kind": kind}
            for pools in ("train", "heldout"):
                maker = TaskMaker(texts, tok, pools, args.seed)
                row[pools] = accuracy(model, tok, maker, kind, args.n, lengths, bos, eos, args.seed)
            rows.append(row)
            print(f"| {path} | {kind} | {row['train']:.1%} | {row['heldout']:.1%} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
