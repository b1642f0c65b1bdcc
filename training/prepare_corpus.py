"""Build the training corpus of the embedded model from Debian packages.

Every text comes from a Debian package (bookworm), fetched with apt and unpacked here with
dpkg-deb; this script installs nothing. To rebuild from scratch, on a Debian machine:

    apt-get update
    mkdir -p /tmp/debs && cd /tmp/debs
    apt-get download r-cran-janeaustenr sword-text-web sword-text-kjv golang-1.19-src \
        fortunes jargon-text dict-devil dict-gcide python3.11-doc libpython3.11-stdlib
    cd /work/main && python3 training/prepare_corpus.py --debs /tmp/debs

What each package gives (cleaned, see the extractors below):

    r-cran-janeaustenr    Jane Austen's six novels (R lazy-load data, decoded here), one doc a chapter
    sword-text-web        World English Bible (public domain), SWORD zText module, one doc a book
    sword-text-kjv        King James Version, same format
    golang-1.19-src       src/testdata/Isaac.Newton-Opticks.txt (a Project Gutenberg text)
    fortunes              the English fortune cookie files (quotations, jokes, verse)
    jargon-text           the Jargon File 4.4.7
    dict-devil            Ambrose Bierce, The Devil's Dictionary
    dict-gcide            GCIDE (Webster's 1913 based); the first --gcide-mb megabytes only
    python3.11-doc        reStructuredText sources of the Python documentation (prose about code)
    libpython3.11-stdlib  Python standard library source (code)

Outputs (paths relative to the repository root):

    .data/corpus_train.txt.xz   training documents, each followed by a line holding only DOC_SEP
    .data/corpus_val.txt        held-out documents, same format (about 1% of each source's documents)
    assets/heldout.txt          held-out prose documents only, plain text, blank-line separated, <= --heldout-kb
    training/corpus_manifest.json  packages, versions, files, byte and document counts

Long texts are cut into documents of about --doc-kb kilobytes at paragraph boundaries, so that the
held-out split is document-level and never shares a paragraph with training text.
"""

import argparse
import glob
import gzip
import hashlib
import json
import lzma
import os
import random
import re
import struct
import subprocess
import tempfile
import unicodedata
import zlib

DOC_SEP = "\x1e"  # ASCII record separator, alone on a line after each document
PROSE_SOURCES = ("austen", "bible-web", "bible-kjv", "opticks", "devil", "jargon", "fortunes")


# ----------------------------------------------------------------------------- cleaning

def normalise(text):
    """NFC, unix newlines, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\x1e", " ").replace("\x00", "")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def unwrap(text):
    """Join hard-wrapped lines of each paragraph (prose only; paragraphs are blank-line separated)."""
    paras = re.split(r"\n\s*\n", text)
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p).strip() for p in paras if p.strip())


def strip_gutenberg(text):
    """Drop the Project Gutenberg header and licence, keeping what lies between the START/END marks."""
    start = re.search(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG[^\n]*\n", text)
    if start:
        text = text[start.end():]
    end = re.search(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|\n\s*End of (the )?Project Gutenberg", text, re.I)
    return text[: end.start()] if end else text


def split_doc(text, max_chars):
    """Cut text at paragraph boundaries into pieces of about max_chars."""
    if len(text) <= 1.5 * max_chars:
        return [text]
    pieces, cur, n = [], [], 0
    for para in text.split("\n\n"):
        cur.append(para)
        n += len(para) + 2
        if n >= max_chars:
            pieces.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        if pieces and n < max_chars // 3:
            pieces[-1] += "\n\n" + "\n\n".join(cur)
        else:
            pieces.append("\n\n".join(cur))
    return pieces


# ----------------------------------------------------------------------------- extractors

def read_r_lazyload(rdb_path):
    """Character vectors stored in an R lazy-load database (.rdb): a run of blocks, each a 4-byte
    big-endian length and a zlib stream holding one object in R's XDR serialisation (version 3)."""
    raw = open(rdb_path, "rb").read()
    pos, vectors = 0, []
    while pos < len(raw):
        d = zlib.decompressobj()
        obj = d.decompress(raw[pos + 4:])
        pos = len(raw) - len(d.unused_data)
        assert obj[:2] == b"X\n", "not an XDR serialisation"
        i = 2 + 4 * 3
        (nenc,) = struct.unpack(">i", obj[i:i + 4])
        i += 4 + nenc
        flags, n = struct.unpack(">ii", obj[i:i + 8])
        if flags & 0xFF != 16:  # STRSXP
            continue
        i += 8
        out = []
        for _ in range(n):
            _, ln = struct.unpack(">ii", obj[i:i + 8])
            i += 8
            if ln < 0:  # NA_character_
                out.append("")
                continue
            out.append(obj[i:i + ln].decode("utf-8", "replace"))
            i += ln
        vectors.append(out)
    return vectors


def austen_docs(root):
    rdb = os.path.join(root, "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
    docs = []
    for book, lines in enumerate(read_r_lazyload(rdb)):
        text = "\n".join(lines)
        chapters = re.split(r"\n(?=(?:CHAPTER|Chapter) [IVXLC\d]+\.?\s*\n)", text)
        for k, ch in enumerate(chapters):
            ch = unwrap(normalise(ch))
            if len(ch) > 200:
                docs.append((f"austen/{book}/{k}", ch))
    return docs, [os.path.relpath(rdb, root)]


def sword_docs(root, module):
    """A SWORD zText module (BlockType=BOOK): .bzs holds (offset, size, raw size) per zlib block,
    .bzv holds (block, start, size) per verse slot, in canonical order."""
    base = glob.glob(os.path.join(root, f"usr/share/sword/modules/texts/ztext/{module}"))[0]
    docs, files = [], []
    for testament in ("ot", "nt"):
        bzs = open(f"{base}/{testament}.bzs", "rb").read()
        bzz = open(f"{base}/{testament}.bzz", "rb").read()
        bzv = open(f"{base}/{testament}.bzv", "rb").read()
        files += [os.path.relpath(f"{base}/{testament}.{e}", root) for e in ("bzs", "bzv", "bzz")]
        blocks, books = {}, {}
        for k in range(len(bzv) // 10):
            b, start, size = struct.unpack("<IIH", bzv[k * 10:k * 10 + 10])
            if size == 0:
                continue
            if b not in blocks:
                off, csize, _ = struct.unpack("<III", bzs[b * 12:b * 12 + 12])
                blocks[b] = zlib.decompress(bzz[off:off + csize])
            books.setdefault(b, []).append(blocks[b][start:start + size].decode("utf-8", "replace"))
        for b, verses in books.items():
            osis = " ".join(verses)
            osis = re.sub(r"<note\b.*?</note>", "", osis, flags=re.S)
            osis = re.sub(r"<title\b[^>]*>(.*?)</title>", r"\n\n\1\n\n", osis, flags=re.S)
            osis = re.sub(r"<chapter\b[^>]*sID[^>]*>|<div\b[^>]*type=\"x-p\"[^>]*>", "\n\n", osis)
            text = re.sub(r"<[^>]+>", "", osis)
            text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("&quot;", '"')
            text = "\n\n".join(re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n"))
            text = normalise(text)
            if len(text) > 200:
                docs.append((f"{module}/{testament}/{b}", text))
    return docs, files


def opticks_docs(root):
    path = glob.glob(os.path.join(root, "usr/share/go-*/src/testdata/Isaac.Newton-Opticks.txt"))[0]
    text = open(path, encoding="utf-8", errors="replace").read()
    return [("opticks", unwrap(normalise(strip_gutenberg(normalise(text)))))], [os.path.relpath(path, root)]


def fortune_docs(root):
    paths = sorted(p for p in glob.glob(os.path.join(root, "usr/share/games/fortunes/*"))
                   if not p.endswith((".dat", ".u8")) and os.path.isfile(p)
                   and os.path.basename(p) not in ("ascii-art",))
    docs = []
    for path in paths:
        text = open(path, encoding="utf-8", errors="replace").read()
        cookies = [normalise(c) for c in re.split(r"\n%\n", text) if c.strip()]
        docs.append((f"fortunes/{os.path.basename(path)}", "\n\n".join(cookies)))
    return docs, [os.path.relpath(p, root) for p in paths]


def jargon_docs(root):
    path = os.path.join(root, "usr/share/doc/jargon-text/jargon.txt.gz")
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    return [("jargon", normalise(text))], [os.path.relpath(path, root)]


def dictd_docs(root, name, max_bytes=None):
    """dictd .dict.dz files are gzip-compatible (dictzip)."""
    path = os.path.join(root, f"usr/share/dictd/{name}.dict.dz")
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    text = re.sub(r"^\s*\[(1913 Webster|PJC|WordNet 1\.5|Century Dict\.|Webster 1913 Suppl\.|[A-Z]{2,4})\]\s*$",
                  "", text, flags=re.M)
    text = re.sub(r"^00-database-[^\n]*\n(?:[ \t][^\n]*\n)*", "", text, flags=re.M)
    if max_bytes:
        text = text[:max_bytes]
        text = text[: text.rfind("\n\n")]
    return [(f"dict/{name}", normalise(text))], [os.path.relpath(path, root)]


PYDOC_DIRS = ("tutorial", "library", "howto", "reference", "faq", "using", "extending")


def pydoc_docs(root):
    base = glob.glob(os.path.join(root, "usr/share/doc/python3.*/html/_sources"))[0]
    paths = sorted(p for d in PYDOC_DIRS for p in glob.glob(f"{base}/{d}/**/*.rst.txt", recursive=True))
    paths.append(f"{base}/glossary.rst.txt")
    docs = [(f"pydoc/{os.path.relpath(p, base)}", normalise(open(p, encoding="utf-8").read())) for p in paths]
    return docs, [os.path.relpath(base, root) + f"/{{{','.join(PYDOC_DIRS)}}}/**/*.rst.txt, glossary.rst.txt"]


def pycode_docs(root):
    base = glob.glob(os.path.join(root, "usr/lib/python3.*"))[0]
    paths = sorted(p for p in glob.glob(f"{base}/**/*.py", recursive=True)
                   if "/test" not in p and os.path.isfile(p))
    docs = []
    for p in paths:
        text = normalise(open(p, encoding="utf-8", errors="replace").read())
        if 200 < len(text) < 400_000:
            docs.append((f"pycode/{os.path.relpath(p, base)}", text))
    return docs, [os.path.relpath(base, root) + "/**/*.py (no tests)"]


SOURCES = {  # source name -> (Debian package, extractor)
    "austen": ("r-cran-janeaustenr", austen_docs),
    "bible-web": ("sword-text-web", lambda r: sword_docs(r, "engWEB*")),
    "bible-kjv": ("sword-text-kjv", lambda r: sword_docs(r, "engKJV*")),
    "opticks": ("golang-1.19-src", opticks_docs),
    "fortunes": ("fortunes", fortune_docs),
    "jargon": ("jargon-text", jargon_docs),
    "devil": ("dict-devil", lambda r: dictd_docs(r, "devil")),
    "gcide": ("dict-gcide", None),  # set in main: needs --gcide-mb
    "pydoc": ("python3.11-doc", pydoc_docs),
    "pycode": ("libpython3.11-stdlib", pycode_docs),
}


# ----------------------------------------------------------------------------- main

def unpack(deb, dest):
    subprocess.run(["dpkg-deb", "-x", deb, dest], check=True)
    version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True, text=True)
    return version.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--debs", required=True, help="folder holding the downloaded .deb files")
    ap.add_argument("--out", default=".data", help="data folder (ignored by git)")
    ap.add_argument("--manifest", default="training/corpus_manifest.json")
    ap.add_argument("--heldout", default="assets/heldout.txt")
    ap.add_argument("--heldout-kb", type=int, default=450)
    ap.add_argument("--doc-kb", type=int, default=24, help="long texts are cut into documents of about this size")
    ap.add_argument("--gcide-mb", type=float, default=8.0, help="how much of the dictionary to keep")
    ap.add_argument("--val-frac", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    SOURCES["gcide"] = ("dict-gcide", lambda r: dictd_docs(r, "gcide", int(args.gcide_mb * 1e6)))

    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    manifest = {"doc_separator": "\\x1e on its own line", "sources": [], "val_fraction": args.val_frac}
    train, val = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pkg, extract) in SOURCES.items():
            deb = sorted(glob.glob(os.path.join(args.debs, f"{pkg}_*.deb")))
            assert deb, f"missing {pkg}_*.deb in {args.debs}: run the apt-get download line of this docstring"
            root = os.path.join(tmp, pkg)
            version = unpack(deb[-1], root)
            docs, files = extract(root)
            docs = [(f"{did}#{k}", piece) for did, text in docs
                    for k, piece in enumerate(split_doc(text, args.doc_kb * 1000)) if piece.strip()]
            docs.sort()
            n_val = max(1, round(args.val_frac * len(docs))) if len(docs) > 1 else 0
            val_ids = set(rng.sample([d for d, _ in docs], n_val))
            for did, text in docs:
                (val if did in val_ids else train).append((name, did, text))
            nbytes = sum(len(t.encode()) for _, t in docs)
            manifest["sources"].append({
                "source": name, "debian_package": pkg, "version": version,
                "deb": os.path.basename(deb[-1]), "files": files, "documents": len(docs),
                "val_documents": n_val, "bytes": nbytes,
            })
            print(f"{name:10s} {pkg:22s} {version:22s} docs {len(docs):5d} val {n_val:3d} {nbytes / 1e6:7.2f} MB",
                  flush=True)

    rng.shuffle(train)  # documents in random order; windows are sampled at random anyway
    body = "".join(f"{t}\n{DOC_SEP}\n" for _, _, t in train)
    with lzma.open(os.path.join(args.out, "corpus_train.txt.xz"), "wt", encoding="utf-8", preset=6) as f:
        f.write(body)
    with open(os.path.join(args.out, "corpus_val.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{t}\n{DOC_SEP}\n" for _, _, t in val))

    # held-out prose for CPU evaluation: whole documents, prose sources first, up to the size cap
    order = sorted(val, key=lambda x: (PROSE_SOURCES.index(x[0]) if x[0] in PROSE_SOURCES else 99, x[1]))
    held, size = [], 0
    for src, did, text in order:
        if src not in PROSE_SOURCES:
            continue
        n = len(text.encode()) + 2
        if size + n > args.heldout_kb * 1000:
            continue
        held.append((did, text))
        size += n
    os.makedirs(os.path.dirname(args.heldout) or ".", exist_ok=True)
    with open(args.heldout, "w", encoding="utf-8") as f:
        f.write("\n\n".join(t for _, t in held) + "\n")

    manifest.update({
        "train_documents": len(train), "val_documents": len(val),
        "train_bytes": len(body.encode()),
        "train_xz_bytes": os.path.getsize(os.path.join(args.out, "corpus_train.txt.xz")),
        "val_bytes": os.path.getsize(os.path.join(args.out, "corpus_val.txt")),
        "heldout_file": args.heldout, "heldout_bytes": os.path.getsize(args.heldout),
        "heldout_documents": [d for d, _ in held],
        "train_sha256": hashlib.sha256(body.encode()).hexdigest(),
    })
    with open(args.manifest, "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"train {len(train)} docs {manifest['train_bytes'] / 1e6:.1f} MB "
          f"(xz {manifest['train_xz_bytes'] / 1e6:.1f} MB), val {len(val)} docs "
          f"{manifest['val_bytes'] / 1e6:.2f} MB, heldout {manifest['heldout_bytes'] / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
