"""Where the held-out stories' "who" gap comes from: one model asked "who" over stories that differ in one part.

    python3 training/story_who_gap.py MODEL [--n 100] [--out benchmarks/reading_who_gap.json]

Held-out stories (the evaluation's: 2-5 events of 9 held-out actions, one sentence shape, each event anywhere) are
asked as they are and with one part swapped: their actions' verbs and nouns made up (`coined_verb`, `coined_noun`)
or drawn from the training lexicon, their people from the training names, their places composed. Training stories
(the lexicon stories) are asked as they are, with made-up verbs and nouns, without cues (--story-neutral), and with
the held-out stories' traits put in one at a time: one sentence shape, each event anywhere, no asides, no person
doing two things. A part that moves the accuracy is one the model's "who" depends on (benchmarks/reading_who_gap.md).
Scored as pool_gap.py scores: right when every answer token and its newline are the argmax (teacher-forced, full
cache); each variant asks n "who" questions.
"""
import argparse
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reading_tasks as rt  # noqa: E402
from pool_gap import answers  # noqa: E402
from train_embedded import read_docs, read_sources, reading_texts  # noqa: E402

WHO = ("who", "which person", "which of them", "name the person", "by whom")
ONLY_WHO = {"who": 1, "count": 0, "where": 0, "what": 0, "when": 0}


class Variant(rt.TaskMaker):
    """Training stories with some of the held-out stories' traits: `traits` holds 'shape' (every event in the
    held-out sentence shape), 'spread' (each event at its own depth), 'noaside', 'noshare' (no one does two things)."""

    def __init__(self, texts, tok, seed, traits=(), story_coined=0.0, story_neutral=False):
        super().__init__(texts, tok, "train", seed, ONLY_WHO, story_coined, story_neutral)
        self.traits = set(traits)

    def story_shapes(self):
        return rt.STORY_SHAPES if "shape" in self.traits else super().story_shapes()

    def story_plan(self):
        while True:
            plan = super().story_plan()
            if "noshare" not in self.traits or len({e.agent for e in plan[0]}) == len(plan[0]):
                return plan

    def story_texts(self, events, k, layout=None):
        return super().story_texts(events, k, "spread" if "spread" in self.traits else layout)

    def story_asides(self, events, k, anyone=False):
        return [] if "noaside" in self.traits else super().story_asides(events, k, anyone)


def heldout_maker(texts, tok, seed, swap=None):
    """The evaluation's story maker, with one part of its pools swapped (None: as it is)."""
    maker, r = rt.TaskMaker(texts, tok, "heldout", seed), random.Random(seed)
    pools = maker.pools
    if swap == "coined words":
        pools.acts = [(v.past, v.base, rt.coined_noun(r), a[3]) for a in pools.acts for v in [rt.coined_verb(r)]]
    elif swap == "lexicon words":
        pools.acts = [(v.past, v.base, r.choice(rt.STORY_NOUNS[r.choice(v.takes)]), a[3], v.participle)
                      for a in pools.acts for v in [r.choice(rt.STORY_VERBS)]]
    elif swap == "training names":
        pools.person = rt.Pools("train", r).person
    elif swap == "composed places":
        pools.acts = [(*a[:3], rt.composed_place(r), *a[4:]) for a in pools.acts]
    return maker


def who_accuracy(model, tok, maker, n, lengths, bos, eos, seed) -> float:
    """Share of the first n "who" questions the maker's stories ask that the model answers greedily."""
    rng, right, asked = random.Random(seed), 0, 0
    while asked < n:
        task = maker.make("story", rng.randint(*lengths))
        if task.question.lower().startswith(WHO):
            right, asked = right + answers(model, tok, task, bos, eos), asked + 1
    return right / n


def variants(texts, tok, seed):
    yield "held-out stories", heldout_maker(texts, tok, seed)
    for swap in ("coined words", "lexicon words", "training names", "composed places"):
        yield f"held-out stories, {swap}", heldout_maker(texts, tok, seed, swap)
    yield "training stories", Variant(texts, tok, seed)
    yield "training stories, coined words", Variant(texts, tok, seed, story_coined=1.0)
    yield "training stories, neutral (--story-neutral)", Variant(texts, tok, seed, story_neutral=True)
    for traits in (("shape",), ("spread",), ("noaside",), ("noshare",), ("shape", "spread", "noaside", "noshare")):
        yield f"training stories, {' + '.join(traits)}", Variant(texts, tok, seed, traits)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", default=".data")
    ap.add_argument("--n", type=int, default=100, help="'who' questions per variant")
    ap.add_argument("--lengths", default="200,1000", help="document tokens, min,max (the training stories')")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", default="", help="only the rows whose name holds this text")
    ap.add_argument("--out", help="also write the rows as JSON here")
    args = ap.parse_args()
    from transformers import AutoTokenizer, LlamaForCausalLM

    docs = read_docs(str(Path(args.data) / "corpus_val.txt"))
    texts = reading_texts(docs, read_sources(str(Path(args.data) / "corpus_val_sources.txt"), len(docs)))
    hf_tok = AutoTokenizer.from_pretrained(args.model)
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device).eval()
    tok, lengths = hf_tok.backend_tokenizer, tuple(int(x) for x in args.lengths.split(","))
    rows = []
    for name, maker in variants(texts, tok, args.seed):
        if args.only not in name:
            continue
        acc = who_accuracy(model, tok, maker, args.n, lengths, hf_tok.bos_token_id, hf_tok.eos_token_id, args.seed)
        rows.append({"stories": name, "who": acc, "n": args.n})
        print(f"| {name} | {acc:.0%} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
