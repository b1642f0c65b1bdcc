"""Train the embedded model: a 12-layer Llama (about 11M parameters, GQA 8:2, context 2048) from scratch.

    python3 training/train_embedded.py --data .data --tokenizer .data/tokenizer --out out/embedded --minutes 8
    python3 training/train_embedded.py --data .data --tokenizer .data/tokenizer --out /tmp/smoke --smoke   # CPU

One script, plain PyTorch: tokenize the corpus (tokenizers batch API) into a flat uint16 tensor, draw
random 2048-token windows, replace about --retrieval-frac of the rows of each batch by a synthetic
long-range retrieval sequence (below), train with AdamW, linear warmup then cosine decay over the time
budget, bf16 autocast, gradient clipping. --minutes bounds the whole run, tokenization and final
evaluation included. At the end: validation loss and perplexity on the held-out documents, retrieval
accuracy on synthetic sequences built from held-out text, then save_pretrained (safetensors, bf16)
with the tokenizer, a model card README.md written from this run's numbers, and training_log.json.

Synthetic retrieval sequence (so that some heads learn to look far back):

    <corpus text> The passcode for the blue door is 48213. The code for the green gate is 7720.
    <500 to 1800 tokens of corpus text> \n\nThe passcode for the blue door is 48213. <corpus text>

One to three facts (distinct colour and object) open the block; one of them is asked again after the
filler and answered. The model is trained on every token as usual; the answer digits can only be
predicted by attending back to the fact.
"""

import argparse
import datetime
import json
import lzma
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

DOC_SEP = "\x1e"  # must match prepare_corpus.py

KINDS = ["passcode", "code", "number", "key", "combination", "pin"]
COLOURS = ["blue", "green", "red", "yellow", "black", "white", "silver", "golden", "orange", "purple",
           "brown", "grey"]
THINGS = ["door", "gate", "box", "safe", "locker", "chest", "vault", "cabinet", "drawer", "room"]


# ----------------------------------------------------------------------------- data

def read_docs(path, max_docs=None):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        docs = [d.strip("\n") for d in f.read().split(f"\n{DOC_SEP}\n")]
    docs = [d for d in docs if d.strip()]
    return docs[:max_docs] if max_docs else docs


def tokenize(tok, docs, bos, eos):
    """Flat uint16 stream: <bos> doc <eos> <bos> doc <eos> ... (tokenizers encodes the batch in parallel)."""
    encs = tok.encode_batch_fast(docs, add_special_tokens=False) if hasattr(tok, "encode_batch_fast") \
        else tok.encode_batch(docs, add_special_tokens=False)
    parts = []
    for e in encs:
        parts += [np.array([bos], np.uint16), np.asarray(e.ids, dtype=np.uint16), np.array([eos], np.uint16)]
    return torch.from_numpy(np.concatenate(parts))


class Retrieval:
    """Synthetic fact / filler / question sequences, built on the CPU from a token stream."""

    def __init__(self, tok, stream, seq, filler=(500, 1800), seed=0):
        self.tok, self.stream, self.seq = tok, stream, seq
        self.filler = (min(filler[0], seq // 4), min(filler[1], seq // 2))
        self.rng = random.Random(seed)

    def enc(self, s):
        return self.tok.encode(s, add_special_tokens=False).ids

    def window(self, n):
        i = self.rng.randrange(0, len(self.stream) - n - 1)
        return self.stream[i:i + n].tolist()

    def example(self):
        """(ids of length seq + 1, answer span [a, b) in ids)."""
        r = self.rng
        keys = r.sample([(c, t) for c in COLOURS for t in THINGS], r.randint(1, 3))
        facts = [(r.choice(KINDS), c, t, str(r.randint(10, 99999))) for c, t in keys]
        head = self.enc(" " + " ".join(f"The {k} for the {c} {t} is {n}." for k, c, t, n in facts))
        k, c, t, n = r.choice(facts)
        question = self.enc(f"\n\nThe {k} for the {c} {t} is")
        answer = self.enc(f" {n}.")
        filler = self.window(r.randint(*self.filler))
        block = head + filler + question + answer
        block = block[: self.seq + 1]
        pre = self.window(r.randint(0, max(0, self.seq + 1 - len(block)) // 4))
        ids = pre + block
        a = len(pre) + len(head) + len(filler) + len(question)
        ids += self.window(self.seq + 1 - len(ids))
        return ids[: self.seq + 1], (a, a + len(answer) - 1)  # the digits, not the final "."


def get_batch(stream_dev, B, seq, synth, n_synth, device):
    """B rows of seq + 1 tokens: random corpus windows, the first n_synth replaced by retrieval rows."""
    starts = torch.randint(0, stream_dev.numel() - seq - 1, (B,), device=device)
    rows = stream_dev[starts[:, None] + torch.arange(seq + 1, device=device)]
    if n_synth:
        ex = torch.tensor([synth.example()[0] for _ in range(n_synth)], dtype=torch.long)
        rows[:n_synth] = ex.to(device, non_blocking=True)
    return rows


# ----------------------------------------------------------------------------- model

def build_config(smoke, vocab_size, bos, eos, pad):
    from transformers import LlamaConfig
    if smoke:
        dims = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
    else:  # 12 layers for a visible pyramid; head_dim 32; GQA groups of 4 query heads per KV head
        dims = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=12, num_attention_heads=8,
                    num_key_value_heads=2)
    return LlamaConfig(
        vocab_size=vocab_size, max_position_embeddings=2048, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, initializer_range=0.02, **dims)


def lr_at(step, progress, args):
    """Linear warmup over --warmup steps, then cosine from --lr to --lr * --min-lr-frac over the time budget."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * cos)


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
def retrieval_accuracy(model, synth, n, B, device, amp):
    """Fraction of synthetic examples whose answer digits are all the argmax (teacher forcing)."""
    model.eval()
    hits = 0
    for i in range(0, n, B):
        exs = [synth.example() for _ in range(min(B, n - i))]
        rows = torch.tensor([e[0] for e in exs], device=device)
        with amp():
            pred = model(input_ids=rows[:, :-1]).logits.argmax(-1)
        for r, (ids, (a, b)) in enumerate(exs):
            hits += bool((pred[r, a - 1:b - 1] == rows[r, a:b]).all())
    model.train()
    return hits / n


# ----------------------------------------------------------------------------- outputs

def write_card(out, rep):
    src = "\n".join(f"- `{s['debian_package']}` {s['version']}: {s['source']} ({s['bytes'] / 1e6:.2f} MB)"
                    for s in rep["corpus"].get("sources", []))
    card = f"""---
license: other
library_name: transformers
pipeline_tag: text-generation
tags: [llama, tiny, kv-cache, from-scratch]
---

# pyramid-embedded ({rep['params'] / 1e6:.1f}M)

A small Llama-architecture causal LM trained from scratch for the KV-cache compression studio, so that
the studio has a real model with structure to look at when no network is available. It is a toy: it
writes plausible-looking English and Python fragments, not correct or factual text.

| | |
| --- | --- |
| architecture | LlamaForCausalLM, {rep['config']['num_hidden_layers']} layers, hidden {rep['config']['hidden_size']}, MLP {rep['config']['intermediate_size']}, {rep['config']['num_attention_heads']} query heads / {rep['config']['num_key_value_heads']} KV heads (GQA), head dim {rep['config']['head_dim']}, RoPE, tied embeddings |
| parameters | {rep['params']:,} |
| context | {rep['config']['max_position_embeddings']} tokens (trained at {rep['seq']}) |
| tokenizer | byte-level BPE, vocab {rep['config']['vocab_size']}, trained on the same corpus (digits split) |
| weights | bfloat16 safetensors |
| tokens seen | {rep['tokens_seen']:,} ({rep['steps']} steps of {rep['batch']} x {rep['seq']}) |
| training time | {rep['train_seconds'] / 60:.1f} min on {rep['device_name']} (whole run {rep['total_seconds'] / 60:.1f} min) |
| final train loss | {rep['final_train_loss']:.3f} (mean of the last {rep['final_train_steps']} steps) |
| validation loss / perplexity | {rep['val_loss']:.3f} / {rep['val_ppl']:.1f} on {rep['val_tokens']:,} held-out tokens |
| synthetic retrieval accuracy | {rep['retrieval_acc'] * 100:.1f}% of {rep['retrieval_n']} held-out examples (exact answer digits) |
| date | {rep['date']} |

## Data

Public-domain and free texts taken from Debian packages (see `training/corpus_manifest.json` in the
repository for files, byte counts and the held-out split): {rep['corpus'].get('train_bytes', 0) / 1e6:.1f} MB of training text.

{src}

About {rep['retrieval_frac'] * 100:.0f}% of the training sequences are synthetic retrieval sequences: one to
three facts such as "The passcode for the blue door is 48213." followed by 500-1800 tokens of corpus
text, then one of the facts asked again and answered, so that some heads learn to attend far back.

## Training

Plain PyTorch, AdamW (lr {rep['lr']}, betas (0.9, 0.95), weight decay {rep['weight_decay']}), {rep['warmup']} warmup
steps then cosine decay over the time budget, bf16 autocast, gradient clipping at {rep['clip']}. Script:
`training/train_embedded.py`; `training/README.md` gives the commands to rebuild everything.
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(card)


# ----------------------------------------------------------------------------- main

def keep_best(model, val, args, device, amp, step, best):
    """Validate; remember the weights if they are the best so far."""
    loss = evaluate(model, val, args.seq, 16, device, amp)
    model.train()
    best["history"].append({"step": step, "val_loss": round(loss, 4)})
    print(f"[val] step {step:5d} val loss {loss:.4f}", flush=True)
    if loss < best["val_loss"]:
        best.update(val_loss=loss, step=step,
                    state={k: v.detach().clone() for k, v in model.state_dict().items()})


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=".data")
    ap.add_argument("--tokenizer", default=".data/tokenizer")
    ap.add_argument("--out", default="out/embedded")
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget for the whole script")
    ap.add_argument("--smoke", action="store_true", help="tiny model, short sequences, a few steps (CPU test)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--retrieval-frac", type=float, default=0.3)
    ap.add_argument("--eval-every", type=int, default=250,
                    help="validation every N steps; the best checkpoint is the one saved (the corpus is small)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--reserve-s", type=float, default=45.0, help="seconds kept for evaluation and saving")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
    ap.add_argument("--max-docs", type=int, default=0, help="use only the first N training documents")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (untested on the GPU box)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.smoke:
        args.seq, args.batch, args.max_steps, args.warmup, args.log_every = 256, 4, 6, 2, 2
        args.max_docs = args.max_docs or 60
        args.reserve_s = 0.0
    assert 0 <= args.retrieval_frac < 1, "retrieval fraction must be in [0, 1)"
    assert args.seq <= 2048, "context is 2048"
    return args


def main():
    t0 = time.time()
    args = parse_args()
    torch.manual_seed(args.seed)
    from transformers import AutoTokenizer, LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dev_name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def amp():
        if device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # ---- data
    hf_tok = AutoTokenizer.from_pretrained(args.tokenizer)
    tok = hf_tok.backend_tokenizer
    bos, eos, pad = hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id
    assert None not in (bos, eos, pad), "tokenizer needs bos, eos and pad tokens"
    train_docs = read_docs(os.path.join(args.data, "corpus_train.txt.xz"), args.max_docs or None)
    val_docs = read_docs(os.path.join(args.data, "corpus_val.txt"), 4 if args.smoke else None)
    train = tokenize(tok, train_docs, bos, eos)
    val = tokenize(tok, val_docs, bos, eos)
    del train_docs, val_docs
    print(f"[data] train {train.numel():,} tokens, val {val.numel():,} tokens, "
          f"tokenized in {time.time() - t0:.1f}s", flush=True)
    synth = Retrieval(tok, train, args.seq, seed=args.seed)
    n_synth = round(args.retrieval_frac * args.batch)
    train_dev = train.to(device).to(torch.int32)  # uint16 indexing is not supported everywhere

    # ---- model
    config = build_config(args.smoke, len(hf_tok), bos, eos, pad)
    model = LlamaForCausalLM(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"[model] {params:,} parameters, {config.num_hidden_layers} layers, device {dev_name}", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device == "cuda")
    fwd = torch.compile(model) if args.compile else model

    # ---- train
    budget = args.minutes * 60 - args.reserve_s
    t_train = time.time()
    train_budget = max(1.0, budget - (t_train - t0))
    step, tokens, log, recent = 0, 0, [], []
    best = {"val_loss": float("inf"), "step": 0, "state": None, "history": []}
    loss_acc = torch.zeros((), device=device)
    t_log, tok_log = time.time(), 0
    while True:
        elapsed = time.time() - t_train
        if (args.max_steps and step >= args.max_steps) or (not args.max_steps and elapsed >= train_budget):
            break
        lr = lr_at(step, elapsed / train_budget if not args.max_steps else step / args.max_steps, args)
        for g in opt.param_groups:
            g["lr"] = lr
        rows = get_batch(train_dev, args.batch, args.seq, synth, n_synth, device).long()
        with amp():
            logits = fwd(input_ids=rows[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        loss_acc += loss.detach()
        step += 1
        tokens += args.batch * args.seq
        tok_log += args.batch * args.seq
        if step % args.log_every == 0:
            mean = loss_acc.item() / args.log_every
            loss_acc.zero_()
            dt = time.time() - t_log
            rec = dict(step=step, loss=round(mean, 4), lr=round(lr, 6), gnorm=round(gnorm.item(), 3),
                       tok_s=round(tok_log / dt), elapsed_s=round(time.time() - t0, 1))
            log.append(rec)
            recent = (recent + [mean])[-4:]
            print(f"[train] step {step:5d} loss {mean:.4f} lr {lr:.2e} gnorm {rec['gnorm']:.2f} "
                  f"{rec['tok_s']:,} tok/s elapsed {rec['elapsed_s']:.0f}s", flush=True)
            t_log, tok_log = time.time(), 0
        if step % args.eval_every == 0:
            keep_best(model, val, args, device, amp, step, best)
    train_seconds = time.time() - t_train
    if not recent:  # fewer steps than one log interval
        recent = [loss.item()]

    # ---- evaluate (the best validation checkpoint: ~11M parameters overfit ~11M tokens within minutes)
    keep_best(model, val, args, device, amp, step, best)
    model.load_state_dict(best["state"])
    val_loss = best["val_loss"]
    val_synth = Retrieval(tok, val, args.seq, seed=12345)
    n_ret = 16 if args.smoke else 256
    acc = retrieval_accuracy(model, val_synth, n_ret, 16, device, amp)
    print(f"[eval] val loss {val_loss:.4f} ppl {math.exp(val_loss):.2f}, retrieval accuracy {acc:.3f} "
          f"({n_ret} examples)", flush=True)

    # ---- save
    os.makedirs(args.out, exist_ok=True)
    # shards under 12 MB: files that travel back from the GPU machine are capped at 16 MiB each
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True, max_shard_size="12MB")
    hf_tok.save_pretrained(args.out)
    manifest_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_manifest.json")
    corpus = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    cfg = config.to_dict()
    cfg["head_dim"] = config.hidden_size // config.num_attention_heads
    rep = dict(
        date=datetime.date.today().isoformat(), device_name=dev_name, torch=torch.__version__,
        params=params, config=cfg, seq=args.seq, batch=args.batch, steps=step, tokens_seen=tokens,
        train_seconds=train_seconds, total_seconds=time.time() - t0,
        final_train_loss=sum(recent) / len(recent), final_train_steps=len(recent) * args.log_every,
        val_loss=val_loss, val_ppl=math.exp(val_loss), val_tokens=val.numel(),
        retrieval_acc=acc, retrieval_n=n_ret, retrieval_frac=args.retrieval_frac,
        lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, clip=args.clip,
        train_tokens_in_corpus=train.numel(), best_step=best["step"], val_history=best["history"], args=vars(args), log=log,
        corpus={k: corpus[k] for k in ("sources", "train_bytes") if k in corpus},
    )
    write_card(args.out, rep)
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(rep, f, indent=1)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"[done] saved to {args.out} ({size / 1e6:.1f} MB) in {time.time() - t0:.0f}s total", flush=True)


if __name__ == "__main__":
    main()
