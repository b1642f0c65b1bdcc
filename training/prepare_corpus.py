"""Build the training corpus of the embedded model from Debian packages.

Every text comes from a Debian package (bookworm), fetched with apt and unpacked here with
dpkg-deb; this script installs nothing. To rebuild from scratch, on a Debian machine:

    apt-get update
    mkdir -p /tmp/debs && cd /tmp/debs
    apt-get download r-cran-janeaustenr sword-text-web sword-text-kjv golang-1.19-src \
        fortunes jargon-text dict-devil dict-gcide python3.11-doc libpython3.11-stdlib \
        linux-doc-6.1 perl-doc manpages debian-handbook debian-reference-en dict-foldoc gnu-standards
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
    linux-doc-6.1         the kernel's Documentation/ in reStructuredText (no translations), one doc a file
    perl-doc              Perl's manuals (perlintro, perlfunc, perlfaq...), POD turned into plain text
    manpages              Linux man-pages (sections 1, 4, 5, 7, 8 and intros), roff turned into plain text
    debian-handbook       The Debian Administrator's Handbook, English HTML pages as text, one doc a page
    debian-reference-en   Debian Reference, plain-text edition, one doc a chapter
    dict-foldoc           FOLDOC, the Free On-line Dictionary of Computing
    gnu-standards         GNU Coding Standards and Information for Maintainers of GNU Software

Each source's licence, as its package's copyright file states it, is in SOURCES and in the manifest.

Outputs (paths relative to the repository root):

    .data/corpus_train.txt.xz   training documents, each followed by a line holding only DOC_SEP
    .data/corpus_val.txt        held-out documents, same format (about 1% of each source's documents)
    .data/corpus_{train,val}_sources.txt  the source name of each document, one a line, in the same order
    pyramid_core/assets/heldout.txt  held-out prose documents only, plain text, blank-line separated, <= --heldout-kb
    training/corpus_manifest.json  packages, versions, licences, files, byte and document counts

Long texts are cut into documents of about --doc-kb kilobytes at paragraph boundaries, so that the
held-out split is document-level and never shares a paragraph with training text.
"""

import argparse
import glob
import gzip
import hashlib
import html
import html.parser
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


# ----------------------------------------------------------------------------- technical documentation
# Plain-text conversions of Debian's documentation packages. They are crude on purpose: the model needs
# running English text, not faithful rendering, and the script must run with Python and dpkg-deb alone.

MIN_CHARS = 300  # shorter files are mostly index pages or stubs

RST_DROP_BLOCK = {  # directives whose body is build machinery (file lists, raw LaTeX, graphs), not prose
    "toctree", "kernel-doc", "kernel-include", "kernel-abi", "kernel-feat", "kernel-figure", "kernel-render",
    "include", "literalinclude", "raw", "tabularcolumns", "contents", "sectnum", "cssclass", "figure",
    "image", "c:namespace"}


def rst_clean(text):
    """Drop reST comments (SPDX lines, labels), directive lines and their options, and whole directives
    of RST_DROP_BLOCK; keep the prose and the bodies of the other directives (notes, code blocks)."""
    out, drop_indent, options = [], None, False
    for line in text.split("\n"):
        indent = len(line) - len(line.lstrip())
        if drop_indent is not None:  # inside a dropped block: blank lines and deeper indentation
            if not line.strip() or indent > drop_indent:
                continue
            drop_indent = None
        if options and re.match(r"\s+:[\w-]+:", line):  # :maxdepth: 2, :export: and the like
            continue
        options = False
        m = re.match(r"\s*\.\.(?:\s+(\S*))?(.*)$", line)
        if m and not (m.group(1) or "").startswith("["):  # comment, label or directive (not a footnote)
            name, rest = m.group(1) or "", m.group(2)
            directive = name.endswith("::") or rest.lstrip().startswith("::")
            name = name.rstrip(":")
            if not directive or name in RST_DROP_BLOCK:
                drop_indent = indent
            elif name.startswith("c:") and rest.strip(" :"):  # a C signature is worth keeping
                out.append(" " * indent + rest.strip(" :"))
            options = directive
            continue
        out.append(line)
    return "\n".join(out)


def kernel_docs(root):
    base = glob.glob(os.path.join(root, "usr/share/doc/linux-doc-*/Documentation"))[0]
    paths = sorted(p for p in glob.glob(f"{base}/**/*.rst.gz", recursive=True) if "/translations/" not in p)
    docs = []
    for p in paths:
        text = normalise(rst_clean(gzip.open(p, "rt", encoding="utf-8", errors="replace").read()))
        if len(text) >= MIN_CHARS:
            docs.append((f"kernel/{os.path.relpath(p, base)[:-len('.rst.gz')]}", text))
    return docs, [os.path.relpath(base, root) + "/**/*.rst.gz (no translations/)"]


POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}


def pod_code(code, body):
    """One POD formatting code: X<> index entries and Z<> vanish, E<> is a character, L<> keeps its
    text (or the page and section it points to), B<> C<> I<> F<> S<> keep their content. The angle
    brackets of the result are masked (as NUL and SOH) so that the next pass does not read codes in them."""
    if code in "XZ":
        return ""
    if code == "E":
        body = chr(int(body, 0)) if body[:1].isdigit() else POD_ESCAPES.get(body) or html.unescape(f"&{body};")
    elif code == "L":
        text, bar, _ = body.partition("|")
        if not bar:  # L<page/"section">, L</section> or L<page>
            page, _, section = body.partition("/")
            text = f"{section} in {page}" if page and section else section or page
        body = text
    return body.replace("<", "\0").replace(">", "\1")


def pod_codes(text):
    """Unwrap the formatting codes of an ordinary paragraph, innermost first: B<C<x>> -> B<x> -> x."""
    def single(t):
        while True:
            new = re.sub(r"([A-Z])<([^<>]*)>", lambda m: pod_code(m[1], m[2]), t)
            if new == t:
                return new
            t = new
    for n in (4, 3, 2):  # C<< $a->[0] >>: n angle brackets, blanks inside
        text = re.sub(rf"([A-Z]){'<' * n}\s+(.*?)\s+{'>' * n}",
                      lambda m: pod_code(m[1], single(m[2])), text, flags=re.S)
    return single(text).replace("\0", "<").replace("\1", ">")


def pod_text(src):
    """Crude POD to text: headings and item labels become their text, =over/=back/=cut/=for... go,
    formatting codes are unwrapped, verbatim (indented) paragraphs stay as they are."""
    out, skipping = [], False
    for para in re.split(r"\n[ \t]*\n|\n(?==[a-z])", src):  # a command may follow a line directly
        if para.startswith(("=begin", "=end")):  # =begin html ... =end html: not for text readers
            skipping = para.startswith("=begin")
        elif skipping or not para.strip():
            pass
        elif para[0] in " \t":  # verbatim: code, kept as it is
            out.append(para)
        elif not para.startswith("="):
            out.append(pod_codes(para))
        elif para.startswith(("=head", "=item")):
            label = re.sub(r"^=\w+\s*", "", para)
            if label.strip() not in ("", "*"):
                out.append(pod_codes(label))
    return "\n\n".join(out)


POD_SKIP = ("perltoc", "perluniprops", "perlcn", "perljp", "perlko", "perltw")  # contents, tables, not English


def perl_docs(root):
    paths = sorted(glob.glob(os.path.join(root, "usr/share/perl/5.*/pod/*.pod")))
    paths = [p for p in paths if os.path.basename(p)[:-4] not in POD_SKIP]
    docs = []
    for p in paths:
        text = normalise(pod_text(open(p, encoding="utf-8", errors="replace").read()))
        if len(text) >= MIN_CHARS:
            docs.append((f"perl/{os.path.basename(p)[:-4]}", text))
    base = os.path.relpath(os.path.dirname(paths[0]), root)
    return docs, [f"{base}/*.pod (not {', '.join(POD_SKIP)})"]


ROFF_CHARS = {
    "em": "\u2014", "en": "\u2013", "hy": "-", "bu": "\u2022", "aq": "'", "dq": '"', "lq": "\u201c",
    "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "ga": "`", "ha": "^", "ti": "~", "rs": "\\", "sl": "/",
    "mu": "\u00d7", "di": "\u00f7", "+-": "\u00b1", "co": "\u00a9", "rg": "\u00ae", "tm": "\u2122",
    "de": "\u00b0", "dg": "\u2020", "mc": "\u00b5", "<=": "\u2264", ">=": "\u2265", "!=": "\u2260",
    "->": "\u2192", "<-": "\u2190", "la": "\u27e8", "ra": "\u27e9", "fm": "\u2032", "sd": "\u2033",
    "ss": "\u00df", "Fo": "\u00ab", "Fc": "\u00bb"}
ROFF_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", ":": "\u0308", "~": "\u0303", ",": "\u0327"}
ROFF_ESCAPE = re.compile(r"""\\(?:
      [fFn](?:\[[^]]*\]|\(..|.)        # font change, number register
    | s[-+]?(?:\d|\(\d\d|\[\d+\])       # size change
    | [wNhvoDlLxXbZ]'[^']*'             # width, glyph number, motions
    | \*?\[([^]]*)\] | \*?\((..)        # named character or string: \[em] \(em \*(lq
    | \*.                               # one-letter string
    | ".*                               # comment to the end of the line
    | (.))""", re.X)


def roff_escape(m):
    name = m.group(1) or m.group(2)
    if name:
        if re.fullmatch(r"u[0-9A-F]{4,5}", name):
            return chr(int(name[1:], 16))
        if len(name) == 2 and name[0] in ROFF_ACCENTS:  # \[:a] -> a with diaeresis
            return unicodedata.normalize("NFC", name[1] + ROFF_ACCENTS[name[0]])
        return ROFF_CHARS.get(name, "")
    c = m.group(3)
    if c is None:
        return ""
    return {"e": "\\", "~": " ", "0": " ", " ": " ", "t": "\t"}.get(c, "" if c in "&%:|^c/,)!{}dupr" else c)


def roff_args(s):
    """Macro arguments: blank-separated (an escaped blank does not separate), double quotes group,
    "" inside quotes is a quote."""
    return [ROFF_ESCAPE.sub(roff_escape, (q or b).replace('""', '"'))
            for q, b in re.findall(r'"((?:[^"]|"")*)"?|((?:\\.|[^\s\\])+)', s)]


class RoffText:
    """A man page (man macros, tbl tables) as plain text: filled paragraphs joined into lines, .SH/.SS
    headings, .TP/.IP labels on their own line, .nf/.EX blocks verbatim, other requests dropped."""

    def __init__(self):
        self.out, self.para = [], []  # finished lines; pieces of the paragraph being filled
        self.fill, self.tag, self.table, self.skip, self.url = True, False, None, None, ""

    def brk(self, blank=True):
        """End the paragraph being filled, with a blank line after it or (blank=False) without."""
        if self.para:
            self.out.append(" ".join(self.para))
            self.para = []
        if blank and self.out and self.out[-1]:
            self.out.append("")

    def emit(self, text):
        if self.tag:  # the label line after .TP
            self.brk(False)
            self.out.append(text)
            self.tag = False
        elif self.fill:
            self.para.append(text)
        else:
            self.out.append(text)

    def table_line(self, line):
        """tbl: format lines up to the one ending in ".", then rows: cells split by tabs, T{ T} around
        long cells, _ and = for rules."""
        if self.table == "format":
            self.table = "data" if line.rstrip().endswith(".") else "format"
        elif line.strip() not in ("_", "=", ""):
            cells = ROFF_ESCAPE.sub(roff_escape, line.replace("T{", "").replace("T}", "")).split("\t")
            self.out.append(" | ".join(c.strip() for c in cells))

    def request(self, name, args, line):
        if name in ("SH", "SS"):
            self.brk()
            if args:
                self.out += [" ".join(args), ""]
            self.tag = not args  # a heading without arguments is on the next line
        elif name in ("PP", "LP", "P", "sp", "HP", "RS", "RE", "INDENT", "UNINDENT", "YS"):
            self.brk()
        elif name in ("br", "TP", "TQ"):
            self.brk(name == "TP")
            self.tag = name != "br"
        elif name == "IP" and args and len(args[0]) <= 4:  # a bullet or a number leads its paragraph
            self.brk()
            self.para.append(args[0])
        elif name == "IP":
            self.brk()
            self.tag = bool(args)
            if args:
                self.emit(args[0])
        elif name in ("nf", "EX", "fi", "EE"):
            self.brk(False)
            self.fill = name in ("fi", "EE")
        elif name in ("TS", "TE"):
            self.brk()
            self.table = "format" if name == "TS" else None
        elif name in ("B", "I", "SM", "SB", "SY") and args:
            self.emit(" ".join(args))
        elif name in ("BR", "IR", "RB", "RI", "BI", "IB"):  # alternating fonts, no blanks between
            self.emit("".join(args))
        elif name == "q" and args:  # tzfile(5) defines it: quoted text
            self.emit("\u201c" + args[0] + "\u201d" + "".join(args[1:]))
        elif name in ("UR", "MT"):
            self.url = args[0] if args else ""
        elif name in ("UE", "ME"):
            self.emit(f"<{self.url}>" + "".join(args))
        elif name in ("de", "de1", "am", "ig"):
            self.skip = ".."
        elif name in ("if", "ie", "el") and "\\{" in line:
            self.skip = "\\}"

    def text(self, src):
        for line in src.split("\n"):
            m = re.match(r"[.'][ \t]*(\S*)[ \t]*(.*)", line)
            if self.skip:  # inside a macro definition (.de ... ..) or a conditional block (\{ ... \})
                if (line.startswith("..") if self.skip == ".." else "\\}" in line):
                    self.skip = None
            elif m:
                self.request(m.group(1), roff_args(m.group(2)), line)
            elif self.table:
                self.table_line(line)
            elif not self.fill:
                self.emit(ROFF_ESCAPE.sub(roff_escape, line))
            elif line.strip():
                self.emit(ROFF_ESCAPE.sub(roff_escape, line).strip())
            else:  # a blank line in filled text ends the paragraph
                self.brk()
        self.brk()
        return "\n".join(self.out)


def manpage_docs(root):
    base = os.path.join(root, "usr/share/man")
    paths = sorted(p for p in glob.glob(f"{base}/man*/*.gz") if not os.path.islink(p))
    docs = []
    for p in paths:
        text = normalise(RoffText().text(gzip.open(p, "rt", encoding="utf-8", errors="replace").read()))
        if len(text) >= MIN_CHARS:  # drops the ".so" pages that only point to another page
            docs.append((f"man/{os.path.relpath(p, base)[:-3]}", text))
    return docs, ["usr/share/man/man*/*.gz (not symlinks)"]


class HTMLText(html.parser.HTMLParser):
    """Visible text of a (DocBook/Publican) HTML page: block elements start paragraphs, <pre> keeps its
    lines, and the page head, banner, navigation bars and tables of contents are skipped."""
    BLOCKS = {"p", "div", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "tr", "table",
              "blockquote", "br", "ul", "ol", "dl"}

    def __init__(self):
        super().__init__(convert_charrefs=True)  # entities arrive unescaped
        self.parts, self.skip, self.pre = [], None, 0  # skip: [tag, depth] of the element being skipped

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.skip:
            if tag == self.skip[0]:  # the same element nested inside the skipped one
                self.skip[1] += 1
        elif (tag in ("head", "script", "style") or a.get("id") in ("banner", "title")
                or {"docnav", "toc"} & set((a.get("class") or "").split())):
            self.skip = [tag, 1]
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
            self.pre += tag == "pre"

    def handle_endtag(self, tag):
        if self.skip:
            if tag == self.skip[0]:
                self.skip[1] -= 1
                self.skip = self.skip if self.skip[1] else None
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
            self.pre -= tag == "pre"

    def handle_data(self, data):
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()
        self.parts.append(data)


def handbook_docs(root):
    base = os.path.join(root, "usr/share/doc/debian-handbook/html/en-US")
    docs = []
    for p in sorted(glob.glob(f"{base}/*.html")):
        parser = HTMLText()
        parser.feed(open(p, encoding="utf-8", errors="replace").read())
        text = normalise("".join(parser.parts))
        if len(text) >= MIN_CHARS:
            docs.append((f"handbook/{os.path.basename(p)[:-5]}", text))
    return docs, [os.path.relpath(base, root) + "/*.html"]


def debref_docs(root):
    path = os.path.join(root, "usr/share/debian-reference/debian-reference.en.txt.gz")
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read().replace("\xa0", " ")  # w3m's
    text = text[text.index("\nPreface\n\nTable of Contents"):]  # after the title page and book contents
    text = re.sub(r"Table of Contents\n\n(?:[\d.]+ [^\n]*\n|    [^\n]*\n)+", "", text)  # the preface's own
    text = re.sub(r"^-{20,}$", "", text, flags=re.M)  # rules above the footnotes
    text = re.sub(r"^ *[|+][-+|]{3,}[|+]\n", "", text, flags=re.M)  # the rules between table rows
    text = re.sub(r"^    ", "", text, flags=re.M)  # body text is indented by four spaces
    parts = re.split(r"\n(?=(?:Chapter \d+|Appendix [A-Z])\. )", text)
    docs = [(f"debref/{k:02d}", normalise(p)) for k, p in enumerate(parts) if len(p.strip()) >= MIN_CHARS]
    return docs, [os.path.relpath(path, root)]


def gnu_standards_docs(root):
    docs, files = [], []
    for name in ("standards", "maintain"):
        path = os.path.join(root, f"usr/share/doc/gnu-standards/{name}.text.gz")
        text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
        text = text[re.search(r"^\S[^\n]*\n\*{3,}\n", text, re.M).start():]  # the contents list goes
        end = re.search(r"^Appendix [A-Z] GNU Free Documentation License\n\*", text, re.M)
        text = text[: end.start()]  # the licence (the same copy in both manuals) and the index go too
        docs.append((f"gnu/{name}", normalise(text)))
        files.append(os.path.relpath(path, root))
    return docs, files


SOURCES = {  # source name -> (Debian package, extractor, licence as stated in usr/share/doc/<package>/copyright)
    "austen": ("r-cran-janeaustenr", austen_docs, "MIT (the novels themselves are public domain)"),
    "bible-web": ("sword-text-web", lambda r: sword_docs(r, "engWEB*"), "public domain"),
    "bible-kjv": ("sword-text-kjv", lambda r: sword_docs(r, "engKJV*"),
                  "public domain (outside the UK, where Crown letters patent apply)"),
    "opticks": ("golang-1.19-src", opticks_docs,
                "Go licence (BSD-3-clause); the text is a public-domain Project Gutenberg book"),
    "fortunes": ("fortunes", fortune_docs,
                 "BSD-3-clause (stated for the program; the cookie files have none of their own)"),
    "jargon": ("jargon-text", jargon_docs, "public domain"),
    "devil": ("dict-devil", lambda r: dictd_docs(r, "devil"), "public domain"),
    "gcide": ("dict-gcide", None, "GPL-2+"),  # extractor set in main: needs --gcide-mb
    "pydoc": ("python3.11-doc", pydoc_docs, "PSF-2.0"),
    "pycode": ("libpython3.11-stdlib", pycode_docs,  # its copyright file is libpython3.11-minimal's (same source)
               "PSF-2.0, a few modules under their own permissive licences"),
    # technical documentation, appended after the sources above so that their validation draws stay the same
    "kernel-doc": ("linux-doc-6.1", kernel_docs,
                   "GPL-2 (per-file SPDX tags: mostly GPL-2.0, GFDL-1.1+ for the media API documents)"),
    "perl-doc": ("perl-doc", perl_docs, "GPL-1+ or Artistic"),
    "manpages": ("manpages", manpage_docs,
                 "GPL-2+; some pages Linux-man-pages-copyleft, GPL-1+, GPL-2, BSD-2/3/4-clause or Expat"),
    "debian-handbook": ("debian-handbook", handbook_docs, "GPL-2.0+ or CC-BY-SA-3.0"),
    "debian-reference": ("debian-reference-en", debref_docs, "GPL-2+"),
    "foldoc": ("dict-foldoc", lambda r: dictd_docs(r, "foldoc"), "GFDL-1.1+"),
    "gnu-standards": ("gnu-standards", gnu_standards_docs, "GFDL-1.3+"),
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
    ap.add_argument("--heldout", default="pyramid_core/assets/heldout.txt")
    ap.add_argument("--heldout-kb", type=int, default=450)
    ap.add_argument("--doc-kb", type=int, default=24, help="long texts are cut into documents of about this size")
    ap.add_argument("--gcide-mb", type=float, default=8.0, help="how much of the dictionary to keep")
    ap.add_argument("--val-frac", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    pkg, _, licence = SOURCES["gcide"]
    SOURCES["gcide"] = (pkg, lambda r: dictd_docs(r, "gcide", int(args.gcide_mb * 1e6)), licence)

    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    manifest = {"doc_separator": "\\x1e on its own line", "sources": [], "val_fraction": args.val_frac}
    train, val = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pkg, extract, licence) in SOURCES.items():
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
                "source": name, "debian_package": pkg, "version": version, "licence": licence,
                "deb": os.path.basename(deb[-1]), "files": files, "documents": len(docs),
                "val_documents": n_val, "bytes": nbytes,
            })
            print(f"{name:16s} {pkg:22s} {version:22s} docs {len(docs):5d} val {n_val:3d} {nbytes / 1e6:7.2f} MB",
                  flush=True)

    rng.shuffle(train)  # documents in random order; windows are sampled at random anyway
    body = "".join(f"{t}\n{DOC_SEP}\n" for _, _, t in train)
    with lzma.open(os.path.join(args.out, "corpus_train.txt.xz"), "wt", encoding="utf-8", preset=6) as f:
        f.write(body)
    with open(os.path.join(args.out, "corpus_val.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{t}\n{DOC_SEP}\n" for _, _, t in val))
    # the source of each document, one name a line in the same order (the reading tasks read prose, not code)
    for name, docs in (("train", train), ("val", val)):
        with open(os.path.join(args.out, f"corpus_{name}_sources.txt"), "w") as f:
            f.write("\n".join(src for src, _, _ in docs))

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
