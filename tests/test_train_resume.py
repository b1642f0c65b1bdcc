"""A run paused on one machine continues on another (train_embedded.py --resume-from <out>/paused): the paused
folder carries the model and where the schedule stood, and the learning rate warms up again for the fresh
optimizer. The optimizer's checkpoint stays behind: it is larger than the GPU machine's transfers."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training"))
import train_embedded as te  # noqa: E402
from tests.test_train_ddp import data, weights  # noqa: E402,F401  (data: a fixture, the corpus folder)


def test_the_rate_warms_up_again_where_a_fresh_optimizer_took_over():
    args = SimpleNamespace(lr=1e-3, warmup=10, min_lr_frac=0.1)
    assert te.lr_at(4, 0.01, args) == pytest.approx(1e-3 * 5 / 10)  # a fresh start, as before
    mid = te.lr_at(100, 0.5, args)
    assert mid == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # halfway down the cosine
    assert te.lr_at(100, 0.5, args, warm_from=100) == pytest.approx(mid / 10)
    assert te.lr_at(104, 0.5, args, warm_from=100) == pytest.approx(mid * 5 / 10)
    assert te.lr_at(110, 0.5, args, warm_from=100) == pytest.approx(mid)


def smoke(data, out, *extra):
    cmd = [sys.executable, str(ROOT / "training/train_embedded.py"), "--data", str(data),
           "--tokenizer", str(data / "tokenizer"), "--out", str(out), "--smoke", *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return subprocess.run(cmd, cwd=ROOT, env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                          timeout=240)


def test_a_paused_run_continues_on_another_machine(tmp_path, data):
    first = smoke(data, tmp_path / "one", "--stop-after", "0.0001")  # the sitting ends after a step or so
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    paused = tmp_path / "one" / "paused"
    assert "[pause]" in first.stdout and "[done]" not in first.stdout
    progress = json.loads((paused / "progress.json").read_text())
    assert 0 <= progress["step"] < 6 and progress["tokens"] == progress["step"] * 4 * 512
    assert (paused / "tokenizer.json").exists() and weights(paused)  # a loadable model travels, not the optimizer

    # "another machine": a new --out without the checkpoint, only the paused folder
    second = smoke(data, tmp_path / "two", "--resume-from", str(paused))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"[resume] from {paused}: step {progress['step']}" in second.stdout
    rep = json.loads((tmp_path / "two" / "training_log.json").read_text())
    assert rep["steps"] == 6 and rep["tokens_seen"] == 6 * 4 * 512  # the schedule's end, not 6 more steps
    assert rep["train_seconds"] >= progress["train_seconds"]


def test_resume_from_refuses_other_weights(tmp_path, data):
    run = smoke(data, tmp_path / "out", "--resume-from", str(tmp_path), "--init", str(tmp_path))
    assert run.returncode == 2 and "not with --init" in run.stderr
