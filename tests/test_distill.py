"""RecurFormer stage B: end-to-end distillation of the model's next-token distribution.

The student forward is pinned by comparison (STYLE rule 10): with no replaced groups it is HF's forward
at every position, and with an adapter its logits are the engine's prefill logits.
"""

import json

import pytest
import torch

from pyramid_core.engine import teacher_forced_logits
from pyramid_core.policies import RecurFormerPolicy
from pyramid_core.recurformer import load_adapter, save_adapter
from pyramid_core.recurformer.convert import convert
from pyramid_core.recurformer.distill import (
    distill,
    kl_loss,
    student_logits,
    teacher_logits,
)
from tests.tiny_models import save_tiny_checkpoint, tiny_model

GROUPS = [[1, 0], [2, 1]]


@pytest.fixture(autouse=True)
def autograd_on():
    """As in test_recurformer.py: a half-consumed engine.generate elsewhere can leave inference mode on."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def ids(n, seed=0, rows=1):
    return torch.randint(3, 97, (rows, n), generator=torch.Generator().manual_seed(seed))


def calibration(seed=7):
    return ids(96, seed, rows=2)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_teacher_is_the_hf_forward_at_every_position(family):
    lm = tiny_model(family)
    x = ids(70, seed=1)
    with torch.no_grad():
        hf = lm.model(x).logits.float()
    torch.testing.assert_close(teacher_logits(lm, x), hf, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_student_logits_equal_the_engine_prefill(family, tmp_path):
    """Position t of the student is the engine's prefill of the first t + 1 tokens, same adapter."""
    lm = tiny_model(family)
    adapter = convert(lm, GROUPS, calibration(), steps=3, progress=False)
    save_adapter(adapter, tmp_path)
    policy = RecurFormerPolicy(adapter=str(tmp_path))
    x = ids(80, seed=2)  # longer than the scan's chunk of 64
    with torch.no_grad():
        student = student_logits(lm, adapter.modules(), x)
    for t in (79, 40):
        engine = teacher_forced_logits(lm, x[:, :t + 1], x[:, :0], policy=policy)[:, 0]
        torch.testing.assert_close(student[:, t], engine, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(student, teacher_logits(lm, x), atol=1e-3)  # the groups were replaced


def test_distillation_lowers_the_kl_and_leaves_the_model_alone():
    lm = tiny_model("llama")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    modules = convert(lm, GROUPS, calibration(), steps=0, progress=False).modules()
    seqs = [row[None] for row in calibration()]
    stats = distill(lm, modules, seqs, steps=40, lr=1e-2, progress=False)
    assert stats["kl_after"] < 0.5 * stats["kl_before"], stats
    with torch.no_grad():
        again = sum(float(kl_loss(student_logits(lm, modules, s), teacher_logits(lm, s))) for s in seqs) / 2
    assert again == pytest.approx(stats["kl_after"], rel=1e-5)
    assert all(p.grad is None for p in lm.model.parameters())
    for key, tensor in lm.model.state_dict().items():
        assert torch.equal(tensor, before[key]), key


def test_zero_distill_steps_change_nothing():
    lm = tiny_model("llama")
    plain = convert(lm, GROUPS, calibration(), steps=5, progress=False)
    zero = convert(lm, GROUPS, calibration(), steps=5, progress=False, distill_steps=0, distill_lr=0.5)
    assert zero.stats == plain.stats and "distill" not in zero.stats
    for key, tensor in plain.state_dict.items():
        assert torch.equal(zero.state_dict[key], tensor), key


def test_convert_runs_both_stages_and_records_them():
    lm = tiny_model("llama")
    adapter = convert(lm, GROUPS, calibration(), steps=5, progress=False, distill_steps=6, distill_lr=1e-2)
    d = adapter.stats["distill"]
    assert d["steps"] == 6 and d["sequences"] == 2 and d["tokens"] == 192 and d["kl_sequences"] == 2
    assert d["kl_after"] < d["kl_before"]
    assert set(adapter.stats["groups"]) == {"1:0", "2:1"}  # stage A's record stays where it was


def test_init_adapter_with_no_stage_a_steps_keeps_its_weights(tmp_path):
    lm = tiny_model("llama")
    first = convert(lm, GROUPS, calibration(), steps=5, progress=False)
    save_adapter(first, tmp_path)
    again = convert(lm, GROUPS, calibration(seed=9), steps=0, progress=False, init_adapter=str(tmp_path))
    for key, tensor in first.state_dict.items():
        assert torch.equal(again.state_dict[key], tensor), key
    assert again.stats["groups"] == first.stats["groups"]
    assert again.stats["init_adapter"]["source"] == str(tmp_path)
    assert again.stats["init_adapter"]["stage_a_steps_here"] == 0
    # distillation from there moves the weights
    moved = convert(lm, GROUPS, calibration(), steps=0, progress=False, init_adapter=first, distill_steps=2)
    assert any(not torch.equal(moved.state_dict[k], t) for k, t in first.state_dict.items())


def test_init_adapter_gains_taps_that_distillation_trains(tmp_path):
    """An adapter without taps, continued with taps=3: same weights and outputs at first (taps at 0);
    distillation then moves the taps; the saved adapter has them and loads back with them."""
    lm = tiny_model("llama")
    first = convert(lm, GROUPS, calibration(), steps=3, progress=False)
    kept = convert(lm, GROUPS, calibration(), steps=0, progress=False, init_adapter=first, taps=3)
    assert kept.config["taps"] == 3
    taps = [k for k in kept.state_dict if k.endswith(".taps")]
    assert len(taps) == len(GROUPS) and all(kept.state_dict[k].abs().sum() == 0 for k in taps)
    for key, tensor in first.state_dict.items():
        assert torch.equal(kept.state_dict[key], tensor), key
    trained = convert(lm, GROUPS, calibration(), steps=0, progress=False, init_adapter=first, taps=3,
                      distill_steps=3, distill_lr=1e-2)
    assert any(trained.state_dict[k].abs().sum() > 0 for k in taps)
    save_adapter(trained, tmp_path)
    (layer, group), rnn = next(((l, g), m) for l, by in load_adapter(tmp_path).modules().items() for g, m in by.items())
    assert rnn.cfg.taps == 3 and torch.equal(rnn.taps, trained.state_dict[f"{layer}.{group}.taps"])


@pytest.mark.parametrize("knobs, message", [
    ({"distill_steps": -1}, "distill_steps must be an integer >= 0"),
    ({"distill_steps": 1.5}, "distill_steps must be an integer >= 0"),
    ({"distill_steps": 2, "distill_lr": 0.0}, r"distill_lr must be in \(0, 1\]"),
    ({"distill_steps": 2, "distill_lr": 3.0}, r"distill_lr must be in \(0, 1\]"),
])
def test_bad_distill_knobs_raise(knobs, message):
    with pytest.raises(ValueError, match=message):
        convert(tiny_model("llama"), GROUPS, calibration(), steps=0, progress=False, **knobs)


def test_init_adapter_of_other_groups_raises():
    lm = tiny_model("llama")
    other = convert(lm, [[1, 0]], calibration(), steps=0, progress=False)
    with pytest.raises(ValueError, match="init adapter replaces groups"):
        convert(lm, GROUPS, calibration(), steps=0, progress=False, init_adapter=other)


def test_cli_convert_with_init_adapter_and_distillation(tmp_path, capsys):
    from pyramid_core.cli import main

    save_tiny_checkpoint(tmp_path / "model", "llama")
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat and a dog ran far away. " * 30)
    common = ["--model", str(tmp_path / "model"), "--calibration-file", str(text), "--max-tokens", "64",
              "--samples", "2", "--groups", "1:0,2:1"]
    assert main(["convert", *common, "--steps", "2", "--out", str(tmp_path / "a")]) == 0
    assert main(["convert", *common, "--steps", "0", "--init-adapter", str(tmp_path / "a"), "--distill-steps", "2",
                 "--distill-lr", "1e-3", "--out", str(tmp_path / "b")]) == 0
    assert "distillation: KL" in capsys.readouterr().out
    stats = json.loads((tmp_path / "b" / "adapter.json").read_text())["stats"]
    assert stats["distill"]["steps"] == 2 and stats["init_adapter"]["source"] == str(tmp_path / "a")
    assert load_adapter(tmp_path / "b").groups == GROUPS
    assert main(["convert", *common, "--distill-steps", "-3", "--out", str(tmp_path / "c")]) == 2
    assert "distill_steps" in capsys.readouterr().err


def test_student_runs_float32_rnns_on_a_bfloat16_model():
    lm = tiny_model("llama")
    modules = convert(lm, GROUPS, calibration(), steps=0, progress=False).modules()
    x = ids(40, seed=4)
    with torch.no_grad():
        full = student_logits(lm, modules, x)
    lm.model.to(torch.bfloat16)
    half = student_logits(lm, modules, x)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert (half - full).abs().max() < 0.1 * full.abs().max()
    half.sum().backward(inputs=list(modules[1][0].parameters()))
    assert modules[1][0].q_proj.weight.grad.dtype == torch.float32
