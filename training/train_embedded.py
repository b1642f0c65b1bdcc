"""Train the embedded model, a small Llama (GQA 6:2, context 4096) that reads its context: from scratch 12 layers
(22M parameters); the shipped one was grown to 16 (28M, --init --grow-layers 16) and trained on.

    python3 training/train_embedded.py --data .data --tokenizer .data/tokenizer --out out/embedded --minutes 18
    python3 training/train_embedded.py --data .data --tokenizer .data/tokenizer --out /tmp/smoke --smoke   # CPU
    torchrun --standalone --nproc_per_node 2 training/train_embedded.py --data .data ...        # 2 GPUs

One script, plain PyTorch. Each batch holds two kinds of rows of --seq + 1 tokens:

- natural text: random windows of the tokenized training corpus (fluency);
- reading tasks (--task-frac of the rows): documents of natural text with facts placed at random depths,
  then `Question: ...` and `Answer: ...` (training/reading_tasks.py), packed one after another into the
  row; DataLoader workers build them while the GPU trains.

Loss on every token, with the answer tokens weighted --answer-weight times (they are a few tokens in
thousands, and the only ones that need the document). AdamW, linear warmup then cosine decay over the
time budget, bf16 autocast, gradient clipping.

Resumable: every --ckpt-minutes the model, optimizer, step and elapsed training time go to
<out>/checkpoint.pt; a run started with --resume continues from it (the schedule follows the training
time already spent, so a run can span several sittings with the same --minutes). The checkpoint holds the
optimizer (~340 MB for the 28M model), more than the GPU machine's transfers carry, so a sitting that pauses also
writes <out>/paused (the bf16 model, its tokenizer and progress.json, ~57 MB): on another machine --resume-from
that folder continues the schedule where it stopped, with a fresh optimizer whose learning rate warms up again
over --warmup steps. At the end: validation
loss, reading accuracy per task kind on held-out tasks (templates, names and texts training never saw;
teacher-forced argmax of every answer token and its newline, i.e. the greedy answer), then
save_pretrained (safetensors, bf16) with the tokenizer, a model card and training_log.json.

Data-parallel under torchrun (WORLD_SIZE > 1): one process a GPU (cuda:LOCAL_RANK; the CPU with gloo
without CUDA), each drawing its own windows and tasks (seed + rank), gradients averaged by
DistributedDataParallel. --batch and --workers are per process: the global batch is batch x processes,
and the schedule still follows the time budget. Ranks agree on the clock and so stop at the same step;
rank 0 alone logs, evaluates and saves. A plain run has no process group and is unchanged.
"""

import argparse
import copy
import datetime
import json
import lzma
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grow_layers import grow_layers  # noqa: E402  (sibling scripts, not a package)
from reading_tasks import STORY_ASKS, TaskMaker  # noqa: E402

DOC_SEP = "\x1e"  # must match prepare_corpus.py
KIND_WEIGHTS = {"single": 0.3, "multi": 0.2, "two": 0.15, "story": 0.2, "quote": 0.15}
# Rank 0 alone evaluates, snapshots and runs the final reading check (a minute or more) while the other
# ranks wait in a collective; NCCL's default of 10 minutes would be close, a real hang still ends.
RANK_TIMEOUT = datetime.timedelta(minutes=30)
CLOCK_SYNC_STEPS = 10  # ranks share rank 0's clock every this many steps (each share is a host sync)


# ----------------------------------------------------------------------------- data

def read_docs(path, max_docs=None):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        docs = [d.strip("\n") for d in f.read().split(f"\n{DOC_SEP}\n")]
    docs = [d for d in docs if d.strip()]
    return docs[:max_docs] if max_docs else docs


def read_sources(path, n):
    """The source name of each document (prepare_corpus.py writes one a line), or None if absent."""
    if not os.path.exists(path):
        return None
    names = open(path).read().split("\n")[:n]
    return names if len(names) == n else None


def reading_texts(docs, sources, skip=("pycode", "gcide", "foldoc")):
    """The natural documents the reading tasks are made of (neither code nor dictionary entries)."""
    return [d for d, s in zip(docs, sources or [""] * len(docs)) if s not in skip]


def tokenize(tok, docs, bos, eos):
    """Flat uint16 stream: <bos> doc <eos> <bos> doc <eos> ... (tokenizers encodes the batch in parallel)."""
    encs = tok.encode_batch_fast(docs, add_special_tokens=False) if hasattr(tok, "encode_batch_fast") \
        else tok.encode_batch(docs, add_special_tokens=False)
    parts = []
    for e in encs:
        parts += [np.array([bos], np.uint16), np.asarray(e.ids, dtype=np.uint16), np.array([eos], np.uint16)]
    return torch.from_numpy(np.concatenate(parts))


def encode_task(tok, task, bos, eos):
    """(ids, answer mask): <bos> prompt answer\\n <eos>; the mask marks the answer and its newline."""
    prompt = tok.encode(task.prompt, add_special_tokens=False).ids
    full = tok.encode(task.text, add_special_tokens=False).ids
    assert full[:len(prompt)] == prompt, "the prompt must tokenize as a prefix of the task"
    ids = [bos] + full + [eos]
    mask = [0] * (1 + len(prompt)) + [1] * (len(full) - len(prompt)) + [0]
    return ids, mask


class TaskRows(torch.utils.data.IterableDataset):
    """Endless rows of seq + 1 tokens packed with reading tasks; yields (ids int64, answer mask bool)."""

    def __init__(self, texts, tokenizer_file, seq, seed, bos, eos, kind_weights, full_rows=0.0,
                 split="train", lengths=(200, 4000), early_single=0.0, kind_lengths=None, story_asks=None,
                 story_coined=0.0, story_neutral=False):
        """lengths: (min, max) document tokens of a task; kind_lengths: {kind: (min, max)} for kinds whose
        documents differ (a curriculum: short several-facts tasks beside long single facts); story_asks: what
        training stories ask, weighted; story_coined: the share of made-up story verbs and nouns; story_neutral:
        "who" questions without cues but the event's words (TaskMaker)."""
        self.texts, self.tokenizer_file, self.seq, self.seed = texts, tokenizer_file, seq, seed
        self.bos, self.eos, self.split, self.lengths = bos, eos, split, lengths
        self.kind_lengths = kind_lengths or {}
        self.kind_weights, self.full_rows, self.early_single = kind_weights, full_rows, early_single
        self.story_asks, self.story_coined, self.story_neutral = story_asks, story_coined, story_neutral

    def __iter__(self):
        from tokenizers import Tokenizer
        info = torch.utils.data.get_worker_info()
        seed = self.seed * 1000 + (info.id if info else 0)
        tok = Tokenizer.from_file(self.tokenizer_file)
        maker, rng = TaskMaker(self.texts, tok, self.split, seed, self.story_asks, self.story_coined,
                               self.story_neutral), random.Random(seed)
        kinds, weights = list(self.kind_weights), list(self.kind_weights.values())
        n = self.seq + 1
        while True:
            ids, mask = [], []
            while len(ids) < n:
                room = n - len(ids)
                if room < 120:  # too short for a task: natural text closes the row
                    filler = " ".join(s for p in maker.filler(room) for s in p)
                    extra = [self.bos] + tok.encode(filler, add_special_tokens=False).ids
                    ids, mask = ids + extra, mask + [0] * len(extra)
                    break
                # a share of rows is one task as long as the row: facts thousands of tokens back
                whole = not ids and rng.random() < self.full_rows
                kind = rng.choices(kinds, weights)[0]
                low, high = self.kind_lengths.get(kind, self.lengths)
                length = min(high if whole else rng.randint(low, high), room - 60)
                # facts at the very start of long documents are the ones the shipped model misses most
                depth = rng.uniform(0, 0.1) if kind == "single" and rng.random() < self.early_single else None
                try:
                    task = maker.make(kind, length, depth)
                except (ValueError, IndexError) as err:  # a generator bug must not end a GPU run: say it, go on
                    print(f"[warn] {kind} task of {length} tokens failed: {err!r}", flush=True)
                    continue
                t_ids, t_mask = encode_task(tok, task, self.bos, self.eos)
                if len(t_ids) > room and len(ids) > 0:
                    continue  # the estimate overshot: try a shorter one
                ids, mask = ids + t_ids, mask + t_mask
            ids = (ids + [self.eos] * n)[:n]
            mask = (mask + [0] * n)[:n]
            yield torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.bool)


def document_mask(ids, bos):
    """[B, T] token ids -> [B, 1, T, T] bool attention mask: each token attends to itself and the earlier
    tokens of its own document (a document begins at a <bos>), so the tasks packed into one row do not
    see each other's facts, as a task is read alone at evaluation. transformers takes a 4D mask as is."""
    doc = torch.cumsum(ids == bos, dim=1)
    causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=ids.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


def document_block_mask(ids, bos):
    """document_mask as FlexAttention's BlockMask: the same tokens attend, and blocks of 128 x 128 that
    no token of one document sees in another are skipped rather than computed and masked."""
    from torch.nn.attention.flex_attention import create_block_mask

    doc = torch.cumsum(ids == bos, dim=1)

    def same_document_causal(b, h, q, kv):
        return (doc[b, q] == doc[b, kv]) & (q >= kv)

    return create_block_mask(same_document_causal, ids.shape[0], None, ids.shape[1], ids.shape[1],
                             device=ids.device)


def natural_rows(stream_dev, B, seq, device):
    starts = torch.randint(0, stream_dev.numel() - seq - 1, (B,), device=device)
    return stream_dev[starts[:, None] + torch.arange(seq + 1, device=device)].long()


# ----------------------------------------------------------------------------- model

SMOKE_SHAPE = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)


def model_shape(args):
    """The model's dimensions: the smoke test's tiny ones, else the shape flags (their defaults are the
    shipped model's: 12 layers for a visible pyramid, head dim 64, 3 query heads per KV head)."""
    if args.smoke:
        return dict(SMOKE_SHAPE)
    assert args.hidden % args.heads == 0, f"hidden {args.hidden} is not a multiple of {args.heads} heads"
    assert args.heads % args.kv_heads == 0, f"{args.heads} query heads do not group over {args.kv_heads} KV heads"
    return dict(hidden_size=args.hidden, intermediate_size=args.mlp, num_hidden_layers=args.layers,
                num_attention_heads=args.heads, num_key_value_heads=args.kv_heads)


def build_config(dims, vocab_size, bos, eos, pad, seq):
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=vocab_size, max_position_embeddings=seq, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, rms_norm_eps=1e-5,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, initializer_range=0.02, **dims)


def add_dropout(model, p):
    """Dropout on the embeddings and on each attention and MLP branch before its residual add (GPT-2's
    places), as forward hooks, so the saved model is a plain Llama with no dropout in its config.

    The corpus is small for a long run (run 1 of the README memorised it in 12 passes); dropout makes
    each pass teach less by heart. Hooks follow `module.training`, so evaluation runs without it."""
    def drop(module, inputs, output):
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, module.training),) + output[1:]
        return F.dropout(output, p, module.training)

    model.model.embed_tokens.register_forward_hook(drop)
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(drop)
        layer.mlp.register_forward_hook(drop)


def lr_at(step, progress, args, warm_from=0):
    """Linear warmup over --warmup steps, then cosine from --lr to --lr * --min-lr-frac over the time budget.
    warm_from: the step at which a fresh optimizer took over mid-schedule (--resume-from); the schedule's rate
    is ramped up again over --warmup steps from there, since the new optimizer has no moments yet."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    lr = args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * cos)
    if step - warm_from < args.warmup:
        lr *= (step - warm_from + 1) / args.warmup
    return lr


def token_weights(mask, n_task, answer_weight, doc_weight):
    """Loss weight of each target: answers `answer_weight`, the rest of task rows `doc_weight`, natural rows 1.

    Task documents are corpus text too; a low weight keeps them from adding passes over the corpus
    (which the model memorises: run 1 of the README), while their answers still teach reading."""
    w = torch.ones_like(mask[:, 1:], dtype=torch.float32)
    w[:n_task] = doc_weight
    return torch.where(mask[:, 1:], torch.full_like(w, answer_weight), w)


def weighted_loss(logits, rows, mask, weights):
    """(weighted loss to train on, plain mean loss, answer-token loss, answer-token accuracy)."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(), reduction="none")
    ans = mask[:, 1:].flatten().float()
    w = weights.flatten()
    n_ans = ans.sum().clamp(min=1)
    right = (logits.argmax(-1).flatten() == rows[:, 1:].flatten()).float()
    return (ce * w).sum() / w.sum(), ce.mean(), (ce * ans).sum() / n_ans, (right * ans).sum() / n_ans


@torch.no_grad()
def evaluate(model, val, seq, B, device, amp):
    """Mean next-token loss over non-overlapping seq-token windows of the validation stream."""
    model.eval()
    n = (val.numel() - 1) // seq
    tot, cnt = 0.0, 0
    for i in range(0, n, B):
        idx = torch.arange(i, min(i + B, n))[:, None] * seq + torch.arange(seq + 1)
        rows = val[idx].to(device, torch.long)
        with amp():
            logits = model(input_ids=rows[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(), reduction="sum")
        tot, cnt = tot + loss.item(), cnt + rows[:, 1:].numel()
    model.train()
    return tot / max(cnt, 1)


@torch.no_grad()
def reading_accuracy(model, tok, texts, n, device, amp, bos, eos, seed=12345, lengths=(200, 4000)):
    """Held-out tasks per kind: share whose answer tokens and newline are all the argmax (the greedy answer)."""
    model.eval()
    maker, rng, out = TaskMaker(texts, tok, "heldout", seed), random.Random(seed), {}
    for kind in TaskMaker.KINDS:
        hits = 0
        for _ in range(n):
            ids, mask = encode_task(tok, maker.make(kind, rng.randint(*lengths)), bos, eos)
            row = torch.tensor([ids], device=device)
            with amp():
                pred = model(input_ids=row[:, :-1]).logits.argmax(-1)[0]
            m = torch.tensor(mask[1:], device=device, dtype=torch.bool)
            hits += bool((pred[m] == row[0, 1:][m]).all())
        out[kind] = hits / n
    model.train()
    return out


# ----------------------------------------------------------------------------- ranks

def start_ranks():
    """(rank, world size, device). Under torchrun with WORLD_SIZE > 1: a process group, NCCL on
    cuda:LOCAL_RANK, or gloo on the CPU without CUDA. Otherwise rank 0 of 1 and no process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=RANK_TIMEOUT, device_id=device if cuda else None)
    return dist.get_rank(), world, device


def end_ranks(world):
    """Wait until rank 0 has saved, then leave the process group (nothing to do for one process)."""
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed, rank):
    """Rank r draws its windows, tasks and dropout with seed + r: rank 0 draws what a one-process run
    does, and no two ranks train on the same rows (which would only copy one GPU's gradient)."""
    return seed + rank


class SittingClock:
    """Seconds since the sitting began, the same number on every rank.

    The learning rate and the stop follow the time; ranks reading their own clocks would set slightly
    different learning rates (weights drift apart) and could stop at different steps (the one still
    training hangs in its gradient all-reduce). So rank 0's clock is broadcast every CLOCK_SYNC_STEPS
    steps and held in between: the schedule moves far too slowly for that to matter. One process reads
    the wall clock at every step, as before."""

    def __init__(self, world, device):
        self.world, self.device, self.start, self.shared = world, device, time.time(), None

    def seconds(self, step):
        if self.world == 1:
            return time.time() - self.start
        if self.shared is None or step % CLOCK_SYNC_STEPS == 0:
            t = torch.tensor([time.time() - self.start], dtype=torch.float64, device=self.device)
            dist.broadcast(t, 0)
            self.shared = t.item()
        return self.shared


def mean_over_ranks(t, world):
    """The mean of `t` over the ranks (a collective: every rank calls it at the same step)."""
    if world > 1:
        dist.all_reduce(t)
        t /= world
    return t


@torch.no_grad()
def rank_weight_gap(model, world):
    """Largest |weight - rank 0's weight| on any rank: 0.0 when DDP kept the copies equal (and for one process)."""
    if world == 1:
        return 0.0
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, 0)
    gap = (flat - ref).abs().max()
    dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    return gap.item()


# ----------------------------------------------------------------------------- outputs

def shape_text(config):
    """'12 layers, hidden 384, MLP 1024, 6/2 heads': the run log's and the card's record of the shape."""
    return (f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, MLP {config.intermediate_size}, "
            f"{config.num_attention_heads}/{config.num_key_value_heads} heads")


def write_card(out, rep):
    src = "\n".join(f"- `{s['debian_package']}` {s['version']} ({s.get('licence', 'see the manifest')}): "
                    f"{s['source']} ({s['bytes'] / 1e6:.2f} MB)" for s in rep["corpus"].get("sources", []))
    reading = ", ".join(f"{k} {v * 100:.0f}%" for k, v in rep["reading"].items())
    c = rep["config"]
    card = f"""---
license: other
library_name: transformers
pipeline_tag: text-generation
tags: [llama, tiny, kv-cache, from-scratch, long-context, retrieval]
---

# pyramid-embedded ({rep['params'] / 1e6:.1f}M)

A small Llama-architecture causal LM trained from scratch for the KV-cache compression studio. It is
trained to **read its context**: answer a question about a document of up to 4096 tokens from a fact
stated anywhere in it, so that a KV-cache mode that drops the fact answers wrong where the full cache
answers right. Beyond that it is a toy: it writes plausible English, not correct or factual text.

## Answer format

The document, a blank line, `Question: ...`, a newline, `Answer:`. The model answers with a short span
of the document and a newline (then its end-of-text token):

```
<document>

Question: What is the code for the blue door?
Answer: 48213
```

Evaluation (`python -m pyramid_core eval --reading`) and the studio's sample prompts use this format.

| | |
| --- | --- |
| architecture | LlamaForCausalLM, {c['num_hidden_layers']} layers, hidden {c['hidden_size']}, MLP {c['intermediate_size']}, {c['num_attention_heads']} query heads / {c['num_key_value_heads']} KV heads (GQA), head dim {c['head_dim']}, RoPE theta {c['rope_parameters']['rope_theta']:g}, tied embeddings |
| parameters | {rep['params']:,} |
| context | {c['max_position_embeddings']} tokens (trained at {rep['seq']}) |
| tokenizer | byte-level BPE, vocab {c['vocab_size']}, digits split one per token |
| weights | bfloat16 safetensors |
| tokens seen | {rep['tokens_seen']:,} ({rep['steps']} steps of {rep['batch']} x {rep['seq']}; {rep['task_frac'] * 100:.0f}% of rows reading tasks) |
| training time | {rep['train_seconds'] / 60:.1f} min on {rep['device_name']} |
| final train loss | {rep['final_train_loss']:.3f} (all tokens, mean of the last logged steps) |
| validation loss / perplexity | {rep['val_loss']:.3f} / {rep['val_ppl']:.1f} on {rep['val_tokens']:,} held-out corpus tokens |
| held-out reading tasks (training script's check) | {reading} ({rep['reading_n']} each, greedy answer exact) |
| date | {rep['date']} |

The project's own evaluation of this checkpoint (length x depth grid, natural-sentence questions,
perplexity, sample prompts, CPU speed) is in the section below, added after training.

## Data

Free texts taken from Debian packages (`training/corpus_manifest.json` lists files, versions, licences
and the held-out split): {rep['corpus'].get('train_bytes', 0) / 1e6:.1f} MB of training text.

{src}

Reading tasks (`training/reading_tasks.py`): natural documents of 200-4000 tokens with generated facts
at random depths; kinds single fact, several facts one asked, two-fact questions (both values, or a
chain through a bridge fact), short stories (who did what, how many, where) and quotations (what
follows a passage of the text). Templates, names, places, objects and texts are split once into a
training and a held-out part; evaluation uses only the held-out part.

## Training

Plain PyTorch, AdamW (lr {rep['lr']}, betas (0.9, 0.95), weight decay {rep['weight_decay']}), dropout {rep['dropout']}, {rep['warmup']} warmup
steps then cosine decay over the time budget, bf16 autocast, gradient clipping at {rep['clip']}, answer tokens
weighted {rep['answer_weight']}x. Script: `training/train_embedded.py`; `training/README.md` gives the commands.
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(card)


# ----------------------------------------------------------------------------- main

def kind_pairs(text) -> dict[str, str]:
    """'single=0.3,story=0.2' -> {'single': '0.3', 'story': '0.2'}; kinds must be TaskMaker's."""
    pairs = dict(kv.split("=") for kv in text.split(","))
    unknown = set(pairs) - set(TaskMaker.KINDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown task kinds {sorted(unknown)}; known: {TaskMaker.KINDS}")
    return pairs


def kind_weights(text):
    """'single=0.3,story=0.2' -> {'single': 0.3, 'story': 0.2}."""
    return {k: float(v) for k, v in kind_pairs(text).items()}


def story_asks(text):
    """'who=3,count=1' -> {'who': 3.0, 'count': 1.0}: weights of what training stories ask."""
    asks = {k: float(v) for k, v in (kv.split("=") for kv in text.split(","))}
    unknown = set(asks) - set(STORY_ASKS)
    if unknown or min(asks.values()) < 0:
        raise argparse.ArgumentTypeError(f"want KIND=WEIGHT,... with weights >= 0 and kinds of {STORY_ASKS}, "
                                         f"got {text!r}")
    return asks


def share(text):
    """'0.4' -> 0.4, refused outside [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"want a share in [0, 1], got {text!r}")
    return value


def token_range(text, sep=",", floor=120):
    """'200,600' -> (200, 600)."""
    low, high = (int(x) for x in text.split(sep))
    if not floor <= low <= high:
        raise argparse.ArgumentTypeError(f"want MIN{sep}MAX with {floor} <= MIN <= MAX, got {text!r}")
    return low, high


def fit_lengths(span, seq):
    """(min, max) document tokens, max within a row of seq tokens (room for the question and answer)."""
    return span[0], min(span[1], seq - 100)


def kind_tokens(text):
    """'multi=150:600,story=150:1200' -> {'multi': (150, 600), 'story': (150, 1200)}. A kind may go as low as
    40 tokens, where its document is its facts alone (the several-facts sample prompt is such a document)."""
    return {kind: token_range(span, ":", floor=40) for kind, span in kind_pairs(text).items()}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=".data")
    ap.add_argument("--tokenizer", default=".data/tokenizer")
    ap.add_argument("--out", default="out/embedded")
    ap.add_argument("--minutes", type=float, default=18.0, help="training time budget (the schedule's length)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    ap.add_argument("--resume-from", default=None,
                    help="continue a paused run on another machine from its <out>/paused folder (a fresh optimizer; "
                         "<out>/checkpoint.pt, when there, wins under --resume)")
    ap.add_argument("--init", default=None, help="start from this saved model's weights instead of random ones")
    ap.add_argument("--grow-layers", type=int, default=0,
                    help="with --init: deepen the model to N layers, new layers adding nothing at first (grow_layers.py)")
    ap.add_argument("--stop-after", type=float, default=0, help="end this sitting after N minutes (0: run to the end)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, short sequences, a few steps (CPU test)")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=384, help="model width (not with --init or --smoke)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=6, help="query heads")
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--mlp", type=int, default=1024, help="MLP width")
    ap.add_argument("--batch", type=int, default=16, help="rows a step per process (global: batch x processes)")
    ap.add_argument("--task-frac", type=float, default=0.5, help="share of rows that are reading tasks")
    ap.add_argument("--answer-weight", type=float, default=4.0)
    ap.add_argument("--doc-weight", type=float, default=1.0, help="loss weight of task rows' other tokens")
    ap.add_argument("--kind-weights", type=kind_weights, default=dict(KIND_WEIGHTS),
                    help="shares of the task kinds, e.g. single=0.3,multi=0.2,two=0.15,story=0.2,quote=0.15")
    ap.add_argument("--full-rows", type=float, default=0.0, help="share of task rows that are one long task")
    ap.add_argument("--task-tokens", type=token_range, default=(200, 4000),
                    help="MIN,MAX: the tasks' document lengths in tokens (MAX at most seq - 100), e.g. 200,600 for "
                         "a curriculum of short documents")
    ap.add_argument("--kind-tokens", type=kind_tokens, default={},
                    help="KIND=MIN:MAX,...: document lengths for some kinds in place of --task-tokens, e.g. "
                         "multi=150:600 keeps several-facts tasks short beside long single facts")
    ap.add_argument("--story-asks", type=story_asks, default=None,
                    help="KIND=WEIGHT,...: what training stories ask, e.g. who=3 for three times as many 'who' "
                         "questions as each other kind (32 of the 80 held-out stories ask 'who', the kind run 18 "
                         "missed most: benchmarks/reading_stories_asked.md)")
    ap.add_argument("--story-coined", type=share, default=0.0,
                    help="share of training story verbs and nouns that are made-up words, matched only by their "
                         "letters (run 20 tried 0.35 and lost ground: benchmarks/reading_run20_gpu.md)")
    ap.add_argument("--story-neutral", action="store_true",
                    help="training stories' 'who' questions carry no cue but the event's words: each person is the "
                         "answer alike however often named, and asides are about anyone (benchmarks/"
                         "reading_who_gap.md)")
    ap.add_argument("--early-single", type=float, default=0.0,
                    help="share of single-fact tasks whose fact lies in the first tenth of the document")
    ap.add_argument("--doc-mask", action="store_true",
                    help="tokens attend only within their own document or task of the row (a block-diagonal "
                         "causal mask; SDPA then leaves its flash kernel: run 13 trained at 0.67x the tokens/s)")
    ap.add_argument("--attention", choices=["sdpa", "flex"], default="sdpa",
                    help="flex: FlexAttention (GPU only), whose block mask skips the blocks --doc-mask masks out "
                         "instead of SDPA's dense mask")
    ap.add_argument("--snapshot-every", type=int, default=0,
                    help="also save the model (bf16) as <out>/snapshots/step-N every N steps (0: never)")
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers building reading tasks, per process")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.0, help="residual and embedding dropout while training")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--reading-n", type=int, default=100, help="held-out tasks per kind in the final check")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
    ap.add_argument("--max-docs", type=int, default=0, help="use only the first N training documents")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.smoke:
        args.seq, args.batch, args.max_steps, args.warmup, args.log_every = 512, 4, 6, 2, 2
        args.max_docs, args.workers, args.reading_n, args.eval_every = args.max_docs or 200, 0, 4, 3
    assert 0 <= args.task_frac <= 1, "task fraction must be in [0, 1]"
    if args.attention == "flex" and not torch.cuda.is_available():
        ap.error("--attention flex needs a GPU (FlexAttention has no backward on the CPU)")
    if args.resume_from and (args.init or args.grow_layers):
        ap.error("--resume-from carries its own weights: not with --init or --grow-layers")
    if args.grow_layers and not args.init:
        ap.error("--grow-layers deepens the --init model: give --init")
    return args


def save_checkpoint(path, model, opt, progress, train_seconds):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": progress.step,
                "tokens": progress.tokens, "train_seconds": train_seconds, "log": progress.log,
                "warm_from": progress.warm_from}, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint


def save_snapshot(path, model, hf_tok):
    """A loadable bf16 copy of the model mid-run: which step reads best is only known afterwards
    (training/rank_snapshots.py), and the held-out perplexity can rise while reading improves."""
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(path, safe_serialization=True)
    hf_tok.save_pretrained(path)


PROGRESS_FILE = "progress.json"  # in <out>/paused: where the schedule stood


def checkpoint_path(out):
    return os.path.join(out, "checkpoint.pt")


# ----------------------------------------------------------------------------- the run's steps

@dataclass
class Process:
    """This process's place in the run: its rank, the number of ranks, its device."""
    rank: int
    world: int
    device: torch.device

    def __post_init__(self):
        self.cuda = self.device.type == "cuda"
        name = torch.cuda.get_device_name(self.device) if self.cuda else "CPU"
        self.name = f"{self.world} x {name}" if self.world > 1 else name

    def say(self, text):  # one log, rank 0's
        if self.rank == 0:
            print(text, flush=True)

    def amp(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)


@dataclass
class Progress:
    """What a checkpoint carries over to the next sitting."""
    step: int = 0
    tokens: int = 0
    earlier_s: float = 0.0  # training seconds of the earlier sittings
    log: list = field(default_factory=list)
    warm_from: int = 0  # the step a fresh optimizer took over (--resume-from): lr_at warms up again from there


@dataclass
class Sitting:
    """How this sitting's training ended."""
    train_seconds: float  # of all sittings so far, by this rank's clock
    trained: float  # the same by the shared clock: every rank sees the same number
    last_loss: torch.Tensor  # the last step's plain loss: the card's when no step was logged
    weight_gap: float = 0.0  # largest weight difference from rank 0 (rank_weight_gap)


def load_data(args, proc, seed, t0):
    """The tokenizer, the tokenized corpus, the reading-task loader of this rank and the held-out texts."""
    from transformers import AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(args.tokenizer)
    hf_tok.model_max_length = args.seq
    tok = hf_tok.backend_tokenizer
    bos, eos = hf_tok.bos_token_id, hf_tok.eos_token_id
    train_docs = read_docs(os.path.join(args.data, "corpus_train.txt.xz"), args.max_docs or None)
    val_docs = read_docs(os.path.join(args.data, "corpus_val.txt"), 20 if args.smoke else None)
    sources = read_sources(os.path.join(args.data, "corpus_train_sources.txt"), len(train_docs))
    val_sources = read_sources(os.path.join(args.data, "corpus_val_sources.txt"), len(val_docs))
    train, val = tokenize(tok, train_docs, bos, eos), tokenize(tok, val_docs, bos, eos)
    tok_file = os.path.join(args.tokenizer, "tokenizer.json")
    tasks = TaskRows(reading_texts(train_docs, sources), tok_file, args.seq, seed, bos, eos,
                     args.kind_weights, args.full_rows,
                     lengths=fit_lengths(args.task_tokens, args.seq), early_single=args.early_single,
                     kind_lengths={kind: fit_lengths(span, args.seq) for kind, span in args.kind_tokens.items()},
                     story_asks=args.story_asks, story_coined=args.story_coined,
                     story_neutral=args.story_neutral)
    heldout_texts = reading_texts(val_docs, val_sources)
    del train_docs
    proc.say(f"[data] train {train.numel():,} tokens, val {val.numel():,} tokens, "
             f"tokenized in {time.time() - t0:.1f}s")
    n_task = round(args.task_frac * args.batch)
    loader = task_loader(tasks, n_task, args.workers, proc.cuda)
    train_dev = train.to(proc.device).to(torch.int32)  # uint16 indexing is not supported everywhere
    return SimpleNamespace(hf_tok=hf_tok, tok=tok, bos=bos, eos=eos, train=train, val=val, train_dev=train_dev,
                           heldout_texts=heldout_texts, n_task=n_task, loader=loader)


def task_loader(tasks, n_task, workers, cuda):
    """Batches of n_task reading-task rows, endless, built by DataLoader workers (None without task rows)."""
    if not n_task:
        return None
    return iter(torch.utils.data.DataLoader(tasks, batch_size=n_task, num_workers=workers, pin_memory=cuda,
                                            prefetch_factor=4 if workers else None,
                                            persistent_workers=bool(workers)))


def build_model(args, hf_tok, proc):
    """(model, config): random weights of the shape flags, or --init's (--resume-from's) weights and shape; in
    training mode."""
    from transformers import LlamaForCausalLM
    init = args.init or args.resume_from
    if init:  # --init: a saved model on a fresh schedule (e.g. changed data); --resume-from: see resume()
        model = LlamaForCausalLM.from_pretrained(init, dtype=torch.float32).to(proc.device)
        if args.grow_layers:
            grow_layers(model, args.grow_layers)
            proc.say(f"[model] --init grown to {args.grow_layers} layers (the new ones add nothing at first)")
        config = model.config
        if any(getattr(config, k) != v for k, v in model_shape(args).items()):
            proc.say(f"[model] --init keeps its own shape ({shape_text(config)}); the shape flags are ignored")
    else:
        config = build_config(model_shape(args), len(hf_tok), hf_tok.bos_token_id, hf_tok.eos_token_id,
                              hf_tok.pad_token_id, args.seq)
        model = LlamaForCausalLM(config).to(proc.device)
    model.train()  # from_pretrained (--init) returns a model in eval mode
    if args.attention == "flex":  # not saved: the checkpoint loads with transformers' default attention
        model.set_attn_implementation("flex_attention")
    if args.dropout:
        add_dropout(model, args.dropout)
    return model, config


def make_optimizer(model, args, cuda):
    """AdamW; no weight decay on vectors (norm weights)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=cuda)


def resume(args, model, opt, seed, proc):
    """The progress of earlier sittings under --resume (model and optimizer loaded from <out>/checkpoint.pt),
    else a fresh start. Every rank loads rank 0's checkpoint, before DDP wraps the model."""
    os.makedirs(args.out, exist_ok=True)
    ckpt = checkpoint_path(args.out)
    if not (args.resume and os.path.exists(ckpt)):
        return resume_portable(args, seed, proc) if args.resume_from else Progress()
    state = torch.load(ckpt, map_location=proc.device)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    progress = Progress(state["step"], state["tokens"], state["train_seconds"], state["log"],
                        state.get("warm_from", 0))
    torch.manual_seed(seed + progress.step)  # other windows than the first sitting's
    proc.say(f"[resume] step {progress.step}, {progress.earlier_s / 60:.1f} min trained")
    return progress


def resume_portable(args, seed, proc):
    """The progress of a run paused on another machine (its <out>/paused; build_model loaded the weights)."""
    with open(os.path.join(args.resume_from, PROGRESS_FILE)) as f:
        state = json.load(f)
    if state["minutes"] != args.minutes:
        proc.say(f"[resume] the paused run's schedule was {state['minutes']} min; this one follows --minutes "
                 f"{args.minutes}")
    progress = Progress(state["step"], state["tokens"], state["train_seconds"], state["log"], warm_from=state["step"])
    torch.manual_seed(seed + progress.step)
    proc.say(f"[resume] from {args.resume_from}: step {progress.step}, {progress.earlier_s / 60:.1f} min trained, "
             f"a fresh optimizer (the learning rate warms up again over {args.warmup} steps)")
    return progress


def save_paused(out, model, hf_tok, progress, train_seconds, minutes):
    """What another machine needs to continue (--resume-from): the bf16 model, the tokenizer and the progress."""
    path = os.path.join(out, "paused")
    save_snapshot(path, model, hf_tok)
    with open(os.path.join(path, PROGRESS_FILE), "w") as f:
        json.dump({"step": progress.step, "tokens": progress.tokens, "train_seconds": train_seconds,
                   "minutes": minutes, "log": progress.log}, f)
    return path


def wrap_ddp(model, proc):
    """The model to train: under several ranks DDP copies rank 0's weights to the others here, then
    averages the gradients in backward."""
    if proc.world == 1:
        return model
    return DistributedDataParallel(model, device_ids=[proc.device.index] if proc.cuda else None)


class LossMeter:
    """Per-step losses and tokens summed since the last log line."""

    def __init__(self, device):
        self.sums, self.steps, self.tokens, self.since = torch.zeros(4, device=device), 0, 0, time.time()

    def add(self, losses, tokens):
        self.sums += losses
        self.steps, self.tokens = self.steps + 1, self.tokens + tokens

    def take(self, world):
        """(the mean losses over the steps and ranks, tokens a second), then start over (a collective)."""
        means = (mean_over_ranks(self.sums, world) / self.steps).tolist()
        self.sums.zero_()
        tok_s = self.tokens / (time.time() - self.since)
        self.steps, self.tokens, self.since = 0, 0, time.time()
        return means, tok_s


def train(args, proc, model, train_model, opt, data, progress):
    """Train until --max-steps, the time budget or --stop-after; rank 0 also evaluates, snapshots and
    checkpoints along the way."""
    budget = args.minutes * 60
    clock = SittingClock(proc.world, proc.device)
    t_sit, t_ckpt = clock.start, time.time()
    meter, last_loss = LossMeter(proc.device), None
    while True:
        sitting = clock.seconds(progress.step)  # the same on every rank, so all ranks stop at the same step
        trained = progress.earlier_s + sitting
        if (args.max_steps and progress.step >= args.max_steps) or (not args.max_steps and trained >= budget):
            break
        if args.stop_after and sitting >= args.stop_after * 60:
            break
        lr = lr_at(progress.step, progress.step / args.max_steps if args.max_steps else trained / budget, args,
                   progress.warm_from)
        for g in opt.param_groups:
            g["lr"] = lr
        losses = train_step(args, proc, model, train_model, opt, data)
        last_loss = losses[0]
        meter.add(losses, args.batch * proc.world * args.seq)
        progress.step, progress.tokens = progress.step + 1, progress.tokens + args.batch * proc.world * args.seq
        if progress.step % args.log_every == 0:
            log_losses(meter, lr, progress, time.time() - t_sit, proc)
        if proc.rank != 0:
            continue  # the rest of the step is rank 0's: the others wait for it in the next all-reduce
        t_ckpt = rank0_chores(args, proc, model, opt, data, progress, t_ckpt, t_sit)
    return Sitting(progress.earlier_s + time.time() - t_sit, trained, last_loss)


def train_step(args, proc, model, train_model, opt, data):
    """One optimizer step on task rows then natural rows: (plain loss, answer loss, answer accuracy,
    weighted loss), detached."""
    rows = natural_rows(data.train_dev, args.batch - data.n_task, args.seq, proc.device)
    mask = torch.zeros_like(rows, dtype=torch.bool)
    if data.n_task:
        t_rows, t_mask = next(data.loader)
        rows = torch.cat([t_rows.to(proc.device, non_blocking=True), rows])
        mask = torch.cat([t_mask.to(proc.device, non_blocking=True), mask])
    inputs = rows[:, :-1]
    attention_mask = None
    if args.doc_mask:
        attention_mask = (document_block_mask if args.attention == "flex" else document_mask)(inputs, data.bos)
    with proc.amp():
        logits = train_model(input_ids=inputs, attention_mask=attention_mask).logits
    weights = token_weights(mask, data.n_task, args.answer_weight, args.doc_weight)
    loss, plain, ans_loss, ans_acc = weighted_loss(logits, rows, mask, weights)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
    opt.step()
    return torch.stack([plain.detach(), ans_loss.detach(), ans_acc.detach(), loss.detach()])


def log_losses(meter, lr, progress, sitting_s, proc):
    """A log record and line of the losses since the last one (every rank: the means are a collective)."""
    m, tok_s = meter.take(proc.world)
    rec = dict(step=progress.step, loss=round(m[0], 4), answer_loss=round(m[1], 4), answer_acc=round(m[2], 4),
               lr=round(lr, 6), tok_s=round(tok_s), trained_s=round(progress.earlier_s + sitting_s, 1))
    progress.log.append(rec)
    proc.say(f"[train] step {progress.step:5d} loss {m[0]:.4f} answer loss {m[1]:.3f} acc {m[2]:.3f} lr {lr:.2e} "
             f"{rec['tok_s']:,} tok/s trained {rec['trained_s']:.0f}s")


def rank0_chores(args, proc, model, opt, data, progress, t_ckpt, t_sit):
    """Rank 0's part of a step: validation, snapshot and checkpoint when due; returns the last checkpoint's time."""
    step = progress.step
    if step % args.eval_every == 0:
        v = evaluate(model, data.val, min(args.seq, 2048), 16, proc.device, proc.amp)
        progress.log.append({"step": step, "val_loss": round(v, 4)})
        proc.say(f"[val] step {step:5d} val loss {v:.4f}")
    if args.snapshot_every and step % args.snapshot_every == 0:
        save_snapshot(os.path.join(args.out, "snapshots", f"step-{step}"), model, data.hf_tok)
    if time.time() - t_ckpt >= args.ckpt_minutes * 60:
        save_checkpoint(checkpoint_path(args.out), model, opt, progress, progress.earlier_s + time.time() - t_sit)
        t_ckpt = time.time()
    return t_ckpt


def end_sitting(args, proc, model, opt, progress, sitting, hf_tok):
    """Measure how far the ranks' weights drifted, checkpoint (rank 0), and say whether the run pauses here
    (--stop-after before the end of the schedule): the shared clock's verdict, the same on every rank. A paused
    run also leaves <out>/paused for --resume-from on another machine."""
    sitting.weight_gap = rank_weight_gap(model, proc.world)
    if proc.world > 1:
        proc.say(f"[ddp] {proc.world} ranks, largest weight difference from rank 0: {sitting.weight_gap:g}")
    if proc.rank == 0:
        save_checkpoint(checkpoint_path(args.out), model, opt, progress, sitting.train_seconds)
    if args.max_steps:
        paused = progress.step < args.max_steps
    else:
        paused = sitting.trained < args.minutes * 60
    if paused and proc.rank == 0:
        path = save_paused(args.out, model, hf_tok, progress, sitting.train_seconds, args.minutes)
        proc.say(f"[pause] step {progress.step}, {sitting.train_seconds / 60:.1f} of {args.minutes} min: "
                 f"resume with --resume here, or with --resume-from {path} on another machine")
    return paused


def evaluate_and_save(args, proc, model, config, data, progress, sitting, t0):
    """Rank 0 at the end: validation loss and held-out reading accuracy, then the bf16 model with the
    tokenizer, the model card and training_log.json."""
    val_loss = evaluate(model, data.val, min(args.seq, 2048), 16, proc.device, proc.amp)
    reading = reading_accuracy(model, data.tok, data.heldout_texts, args.reading_n, proc.device, proc.amp,
                               data.bos, data.eos, lengths=(200, min(4000, args.seq - 100)))
    proc.say(f"[eval] val loss {val_loss:.4f} ppl {math.exp(val_loss):.2f}, reading {reading}")
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True, max_shard_size="12MB")
    data.hf_tok.save_pretrained(args.out)
    rep = run_report(args, proc, model, config, data, progress, sitting, val_loss, reading)
    write_card(args.out, rep)
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(rep, f, indent=1)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out) if f != "checkpoint.pt")
    proc.say(f"[done] saved to {args.out} ({size / 1e6:.1f} MB) in {time.time() - t0:.0f}s total")


def run_report(args, proc, model, config, data, progress, sitting, val_loss, reading):
    """training_log.json's record of the run, which the model card is written from."""
    manifest_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_manifest.json")
    corpus = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    cfg = config.to_dict()
    cfg["head_dim"] = config.hidden_size // config.num_attention_heads
    losses = [r["loss"] for r in progress.log if "loss" in r][-4:] or [sitting.last_loss.item()]
    return dict(
        date=datetime.date.today().isoformat(), device_name=proc.name, torch=torch.__version__,
        params=count_params(model), shape=shape_text(config), config=cfg, seq=args.seq,
        batch=args.batch * proc.world, steps=progress.step, tokens_seen=progress.tokens,
        world_size=proc.world, rank_weight_gap=sitting.weight_gap,
        train_seconds=sitting.train_seconds, final_train_loss=sum(losses) / len(losses),
        val_loss=val_loss, val_ppl=math.exp(val_loss), val_tokens=data.val.numel(),
        reading=reading, reading_n=args.reading_n, task_frac=args.task_frac, answer_weight=args.answer_weight,
        doc_weight=args.doc_weight, kind_weights=args.kind_weights, full_rows=args.full_rows,
        lr=args.lr, weight_decay=args.weight_decay, dropout=args.dropout, warmup=args.warmup, clip=args.clip,
        train_tokens_in_corpus=data.train.numel(), args=vars(args), log=progress.log,
        corpus={k: corpus[k] for k in ("sources", "train_bytes") if k in corpus},
    )


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def main():
    t0 = time.time()
    args = parse_args()
    proc = Process(*start_ranks())
    if proc.cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    seed = rank_seed(args.seed, proc.rank)
    torch.manual_seed(seed)  # ranks build different random weights: DDP copies rank 0's onto the others
    data = load_data(args, proc, seed, t0)  # before the model: the loader's iterator draws from the seed
    model, config = build_model(args, data.hf_tok, proc)
    opt = make_optimizer(model, args, proc.cuda)
    progress = resume(args, model, opt, seed, proc)
    proc.say(f"[model] {count_params(model):,} parameters, {shape_text(config)}, device {proc.name}")
    sitting = train(args, proc, model, wrap_ddp(model, proc), opt, data, progress)
    paused = end_sitting(args, proc, model, opt, progress, sitting, data.hf_tok)
    if paused or proc.rank != 0:
        end_ranks(proc.world)  # the other ranks wait here while rank 0 evaluates and saves
        return
    evaluate_and_save(args, proc, model, config, data, progress, sitting, t0)
    end_ranks(proc.world)


if __name__ == "__main__":
    main()
