"""Write RecurFormer calibration text: the first documents of the training corpus, up to a size.

The training corpus (.data/corpus_train.txt.xz, made by prepare_corpus.py) holds its documents in a
shuffled order, so its head is a sample of every source; it never overlaps pyramid_core/assets/heldout.txt, which
comes from the validation split. The shipped adapters were converted on the first 1.5 MB:

    python training/calibration_text.py --bytes 1500000 --out .data/calibration_1500k.txt
    python -m pyramid_core convert --replace 0.25 --calibration-file .data/calibration_1500k.txt ...
"""

import argparse
import lzma


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=".data/corpus_train.txt.xz")
    ap.add_argument("--bytes", type=int, default=1_500_000, help="characters to keep (cut at a line end)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with lzma.open(args.corpus, "rt", encoding="utf-8") as f:
        text = f.read(args.bytes)
    text = text[: text.rfind("\n") + 1]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{len(text)} characters written to {args.out}")


if __name__ == "__main__":
    main()
