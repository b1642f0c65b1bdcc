"""Data-parallel training (training/train_embedded.py under torchrun), on the CPU with gloo: two ranks train
one model (identical weights at the end, changed from the start), draw different rows, share one clock
(so they stop at the same step), and a one-process run has no process group."""

import json
import lzma
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyramid_core.resources import asset

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
sys.path.insert(0, str(ROOT / "training"))
import train_embedded as te  # noqa: E402



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The corpus folder: .data where it was built (training/README.md), else a small one made of the
    repository's own texts, so that these tests also run where .data is not (CI)."""
    if (DATA / "corpus_train.txt.xz").exists():
        return DATA
    folder = tmp_path_factory.mktemp("data")
    text = "\n\n".join(asset(name).read_text() for name in ("heldout.txt", "calibration.txt"))
    paras = [p.strip() for p in text.split("\n\n") if p.strip()]
    docs = ["\n\n".join(paras[i:i + 6]) for i in range(0, len(paras), 6)]
    sep = f"\n{te.DOC_SEP}\n"
    with lzma.open(folder / "corpus_train.txt.xz", "wt", encoding="utf-8") as f:
        f.write(sep.join(docs[:-20]))
    (folder / "corpus_val.txt").write_text(sep.join(docs[-20:]), encoding="utf-8")
    shutil.copytree(asset("embedded"), folder / "tokenizer", ignore=lambda d, names: [
        n for n in names if not n.startswith("tokenizer")])
    return folder


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_initial_model(path, data):
    """The smoke shape with random weights, for --init: the run's starting point, known to the test."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    config = te.build_config(te.SMOKE_SHAPE, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, 512)
    torch.manual_seed(7)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def weights(path):
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(path / "model.safetensors").items()}


def test_two_ranks_train_one_model(tmp_path, data):
    init, out = save_initial_model(tmp_path / "init", data), tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "training/train_embedded.py"), "--data", str(data), "--tokenizer", str(data / "tokenizer"),
           "--out", str(out), "--smoke", "--init", str(init), "--dropout", "0.1"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    # a rank that stopped alone would leave the other waiting in an all-reduce: the timeout turns that into a failure
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("[done]") == 1 and run.stdout.count("[model]") == 1  # rank 0 alone logs
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]

    rep = json.loads((out / "training_log.json").read_text())
    assert rep["world_size"] == 2 and rep["steps"] == 6
    assert rep["batch"] == 2 * 4 and rep["tokens_seen"] == 6 * 2 * 4 * 512  # the global batch
    # each rank trained on its own rows (and dropout masks): without gradient averaging the copies would drift apart
    assert rep["rank_weight_gap"] == 0.0
    start, end = weights(init), weights(out)
    assert start.keys() == end.keys()
    changed = sum(not torch.equal(start[k].bfloat16().float(), end[k]) for k in start)
    assert changed == len(start), f"only {changed} of {len(start)} tensors moved"


def test_one_process_smoke_run(tmp_path, data):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "training/train_embedded.py"), "--data", str(data),
           "--tokenizer", str(data / "tokenizer"), "--out", str(out), "--smoke"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    run = subprocess.run(cmd, cwd=ROOT, env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("[done]") == 1
    for name in ("model.safetensors", "training_log.json", "README.md"):
        assert (out / name).exists(), name
    rep = json.loads((out / "training_log.json").read_text())
    assert rep["world_size"] == 1 and rep["steps"] == 6 and rep["rank_weight_gap"] == 0.0


def test_ranks_draw_different_windows():
    stream = torch.arange(100_000, dtype=torch.int32)
    rows = []
    for rank in (0, 1):
        torch.manual_seed(te.rank_seed(3, rank))
        rows.append(te.natural_rows(stream, 4, 32, "cpu"))
    assert te.rank_seed(3, 0) == 3  # rank 0 draws what a one-process run draws
    assert not set(rows[0][:, 0].tolist()) & set(rows[1][:, 0].tolist())  # no shared window start


def reading_rows_inputs(data):
    """(held-out texts, tokenizer file, bos, eos): what TaskRows needs, from the test data."""
    from tokenizers import Tokenizer

    tok_file = str(data / "tokenizer/tokenizer.json")
    bos, eos = (Tokenizer.from_file(tok_file).token_to_id(t) for t in ("<|bos|>", "<|eos|>"))
    return te.reading_texts(te.read_docs(str(data / "corpus_val.txt"), 40), None), tok_file, bos, eos


def test_ranks_build_different_reading_rows(data):
    texts, tok_file, bos, eos = reading_rows_inputs(data)
    rows = []
    for rank in (0, 1):
        tasks = te.TaskRows(texts, tok_file, 511, te.rank_seed(0, rank), bos, eos, te.KIND_WEIGHTS)
        rows.append(next(iter(tasks))[0])
    assert not torch.equal(rows[0], rows[1])


def clock_and_gap(rank, port, out):
    """One of two gloo ranks: rank 1's clock runs 100 s ahead and its weights differ by 0.5 in one place."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    clock = te.SittingClock(2, torch.device("cpu"))
    clock.start -= 100 * rank
    seen = [clock.seconds(step) for step in range(3, 3 + 2 * te.CLOCK_SYNC_STEPS)]
    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
        model.bias[2] += 0.5 * rank
    torch.save({"seen": seen, "gap": te.rank_weight_gap(model, 2)}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_ranks_share_rank0_clock_and_the_weight_check_sees_a_drift(tmp_path):
    mp.spawn(clock_and_gap, args=(free_port(), tmp_path), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["seen"] == ranks[1]["seen"]  # same learning rate and stop decision on both
    assert ranks[0]["seen"][0] < 50  # rank 0's clock, not rank 1's (100 s ahead)
    assert ranks[0]["gap"] == ranks[1]["gap"] == 0.5


def test_one_process_has_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rank, world, device = te.start_ranks()
    assert (rank, world) == (0, 1) and not dist.is_initialized()
    assert te.SittingClock(world, device).seconds(0) >= 0  # the wall clock: a collective would raise here


def first_task_tokens(data, lengths, kind_lengths, kind, rows=4):
    """The first task's tokens in each of `rows` rows of 2048 (a row's first task is never cut to fit)."""
    texts, tok_file, bos, eos = reading_rows_inputs(data)
    stream = iter(te.TaskRows(texts, tok_file, 2047, 0, bos, eos, {kind: 1.0}, lengths=lengths,
                              kind_lengths=kind_lengths))
    out = []
    for _ in range(rows):
        ids = next(stream)[0].tolist()
        out.append(ids.index(bos, 1) if bos in ids[1:] else len(ids))
    return out


def test_task_tokens_bound_the_documents(data):
    """--task-tokens sets the tasks' document lengths (the question and answer add a few dozen tokens)."""
    assert te.parse_args(["--task-tokens", "150,200"]).task_tokens == (150, 200)
    with pytest.raises(SystemExit):
        te.parse_args(["--task-tokens", "300,200"])
    assert all(150 <= n <= 300 for n in first_task_tokens(data, (150, 200), None, "multi"))
    assert all(1000 <= n for n in first_task_tokens(data, (1000, 1200), None, "multi"))


def test_kind_tokens_give_some_kinds_their_own_lengths(data):
    """--kind-tokens multi=150:200 keeps several-facts tasks short while single facts stay long."""
    args = te.parse_args(["--kind-tokens", "multi=150:200", "--task-tokens", "1000,1200"])
    assert args.kind_tokens == {"multi": (150, 200)}
    with pytest.raises(SystemExit):
        te.parse_args(["--kind-tokens", "riddle=150:200"])
    assert all(150 <= n <= 300 for n in first_task_tokens(data, args.task_tokens, args.kind_tokens, "multi"))
    assert all(1000 <= n for n in first_task_tokens(data, args.task_tokens, args.kind_tokens, "single"))


def test_a_kind_can_train_documents_of_its_facts_alone(data):
    """--kind-tokens multi=40:60: several-facts documents with no room for filler, shorter than --task-tokens
    allows (its floor stays 120)."""
    assert te.parse_args(["--kind-tokens", "multi=40:60"]).kind_tokens == {"multi": (40, 60)}
    with pytest.raises(SystemExit):
        te.parse_args(["--task-tokens", "40,60"])
    with pytest.raises(SystemExit):
        te.parse_args(["--kind-tokens", "multi=20:60"])
    assert all(n <= 150 for n in first_task_tokens(data, (1000, 1200), {"multi": (40, 60)}, "multi"))


def test_story_coined_reaches_the_training_stories(data):
    """--story-coined 1 puts made-up verbs and nouns into the training story rows' questions (none without it);
    a share outside [0, 1] is refused."""
    import reading_tasks as rt  # on the path since train_embedded's import

    assert te.parse_args(["--story-coined", "0.4"]).story_coined == 0.4
    assert te.parse_args([]).story_coined == 0.0
    for bad in ("1.5", "-0.1"):
        with pytest.raises(SystemExit):
            te.parse_args(["--story-coined", bad])
    texts, tok_file, bos, eos = reading_rows_inputs(data)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_file)
    known = {w for v in rt.STORY_VERBS for form in (v.past, v.base, v.participle) for w in form.split()}
    known |= {w for ns in rt.STORY_NOUNS.values() for n in ns for w in n.split()}
    unknown_share = []
    for coined in (0.0, 1.0):
        stream = iter(te.TaskRows(texts, tok_file, 2047, 0, bos, eos, {"story": 1.0}, lengths=(150, 300),
                                  story_asks={"who": 1, "count": 0, "where": 0, "what": 0, "when": 0},
                                  story_coined=coined))
        questions = [q for _ in range(3) for q in re.findall(r"Question: (.*)\n", tok.decode(next(stream)[0].tolist()))]
        # a 'who' question names a verb and a noun; count those naming no lexicon word after its first two words
        words = [re.findall(r"[a-z]+", q)[2:] for q in questions]
        unknown_share.append(sum(not set(w) & known for w in words) / len(words))
    assert unknown_share[0] == 0 and unknown_share[1] > 0.5, unknown_share


def test_story_neutral_reaches_the_task_maker(data, monkeypatch):
    """--story-neutral (off by default) reaches the training rows' TaskMaker."""
    assert te.parse_args(["--story-neutral"]).story_neutral and not te.parse_args([]).story_neutral
    texts, tok_file, bos, eos = reading_rows_inputs(data)
    makers, real = [], te.TaskMaker

    def spy(*args, **kwargs):
        makers.append(real(*args, **kwargs))
        return makers[-1]

    monkeypatch.setattr(te, "TaskMaker", spy)
    next(iter(te.TaskRows(texts, tok_file, 511, 0, bos, eos, {"story": 1.0}, lengths=(150, 300),
                          story_neutral=True)))
    assert makers and makers[0].story_neutral


def test_story_asks_reach_the_training_stories(data):
    """--story-asks who=1,count=0,... makes (nearly) every training story row ask 'who'; bad weights are refused."""
    args = te.parse_args(["--story-asks", "who=1,count=0,where=0,what=0,when=0"])
    assert args.story_asks == {"who": 1.0, "count": 0.0, "where": 0.0, "what": 0.0, "when": 0.0}
    for bad in ("riddle=1", "who=-1"):
        with pytest.raises(SystemExit):
            te.parse_args(["--story-asks", bad])
    texts, tok_file, bos, eos = reading_rows_inputs(data)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_file)
    stream = iter(te.TaskRows(texts, tok_file, 2047, 0, bos, eos, {"story": 1.0}, lengths=(150, 300),
                              story_asks=args.story_asks))
    questions = [q for _ in range(3) for q in re.findall(r"Question: (.*)\n", tok.decode(next(stream)[0].tolist()))]
    who = [q for q in questions if q.startswith(("Who", "Which", "Name the person", "By whom"))]
    assert len(questions) >= 10 and len(who) >= 0.9 * len(questions), questions
