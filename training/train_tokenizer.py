"""Train the byte-level BPE tokenizer of the embedded model on the training corpus.

    python3 training/train_tokenizer.py --data .data --out .data/tokenizer

Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into --out, loadable offline
with transformers.AutoTokenizer.from_pretrained(out). The tokenizer adds <|bos|> in front of every
encoded text (like Llama's), never <|eos|>; the training script encodes with add_special_tokens=False
and places bos/eos itself.
"""

import argparse
import lzma
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

DOC_SEP = "\x1e"  # must match prepare_corpus.py
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


def iter_docs(path, batch=256):
    """Documents of a corpus file, in batches (the file holds each document then a DOC_SEP line)."""
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        docs, cur = [], []
        for line in f:
            if line == DOC_SEP + "\n":
                docs.append("".join(cur))
                cur = []
                if len(docs) == batch:
                    yield docs
                    docs = []
            else:
                cur.append(line)
        if cur:
            docs.append("".join(cur))
        if docs:
            yield docs


def build(vocab_size):
    tok = Tokenizer(models.BPE())
    # one token per digit: numbers (passcodes of the retrieval task, line numbers) copy digit by digit
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    return tok, trainer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=".data")
    ap.add_argument("--out", default=".data/tokenizer")
    ap.add_argument("--vocab", type=int, default=8192)
    args = ap.parse_args()
    assert args.vocab % 64 == 0, "keep the vocabulary a multiple of 64 (embedding matmul speed)"

    tok, trainer = build(args.vocab)
    tok.train_from_iterator(iter_docs(os.path.join(args.data, "corpus_train.txt.xz")), trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)])

    from transformers import PreTrainedTokenizerFast  # only needed to write the HF side files
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                 model_max_length=2048, clean_up_tokenization_spaces=False)
    os.makedirs(args.out, exist_ok=True)
    hf.save_pretrained(args.out)

    # round trip check on a held-out document
    val = next(iter_docs(os.path.join(args.data, "corpus_val.txt"), batch=1))[0]
    ids = tok.encode(val, add_special_tokens=False).ids
    assert tok.decode(ids) == val, "byte-level BPE must round-trip"
    print(f"vocab {tok.get_vocab_size()}, held-out doc: {len(val.encode())} bytes -> {len(ids)} tokens "
          f"({len(val.encode()) / len(ids):.2f} bytes/token); wrote {sorted(os.listdir(args.out))}")


if __name__ == "__main__":
    main()
