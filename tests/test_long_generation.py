"""The long-generation suite (pyramid_core/long_generation.py, `pyramid eval --suite long`) on a tiny model:
PyramidInfer's decode compression runs several times, the other budgeted modes run at the share it
reached, and the baseline's perplexity is transformers' own."""

import math

import pytest
import torch

from pyramid_core import long_generation as long
from pyramid_core.long_report import long_markdown
from pyramid_core.policies import ALL_POLICIES
from pyramid_core.retrieval import plan
from tests.tiny_models import tiny_model

# 128 + 72 tokens: a share every budgeted mode can hold on the tiny model (PyramidInfer's floor ~0.6, H2O's top ~0.8)
SETTINGS = long.LongSettings(prompts=2, prompt_tokens=128, new_tokens=72, budgets=(0.7,))


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", seed=4)


@pytest.fixture(scope="module")
def text():
    return torch.randint(3, 97, (3000,), generator=torch.Generator().manual_seed(0)).tolist()


@pytest.fixture(scope="module")
def result(lm, text):
    return long.run_long(lm, text, SETTINGS, batch=2)


def test_rows_are_the_baseline_pyramid_and_every_budgeted_mode_at_its_share(lm, result):
    budgeted = [p.mode for p in plan(lm, [1.0]) if p.budget is not None and p.mode != "pyramid"]
    assert "streaming" in budgeted  # and H2O, SnapKV once registered
    assert [r["mode"] for r in result["rows"]] == ["baseline", "pyramid", *budgeted]
    pyr = result["rows"][1]
    for row in result["rows"][2:]:
        assert row["budget"] == pyr["kv_share"] and row["matched_to"] == 0.7
        assert row["kv_share"] == pytest.approx(pyr["kv_share"], abs=0.02)


def test_pyramid_decode_compression_runs_several_times(result):
    base, pyr = result["rows"][0], result["rows"][1]
    assert base["compressions"]["steps"] == 0  # the full cache only grows
    assert pyr["compressions"]["steps"] >= 2
    assert pyr["compressions"]["first_step"] > 1  # it waits for a chunk to leave the recent window
    assert sum(pyr["compressions"]["per_layer"]) == pyr["compressions"]["events"]


def test_baseline_perplexity_is_transformers_own(lm, text, result):
    prompts, continuations = long.build_prompts(text, None, SETTINGS)
    assert prompts.shape == (2, 128) and continuations.shape == (2, 72)
    ids = torch.cat([prompts, continuations], 1)
    with torch.no_grad():
        logits = lm.model(ids).logits[:, prompts.shape[1] - 1:-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), continuations, reduction="none").mean(1)
    assert result["rows"][0]["ppl"] == pytest.approx(math.exp(nll.mean().item()), rel=1e-4)
    assert "agreement" not in result["rows"][0] and result["rows"][0]["ppl_ratio"] == 1.0


def test_report_states_whether_compression_ran(result):
    full = {**result, "model": "tiny", "date": "today", "device": "cpu", "dtype": "float32", "text": "random",
            "versions": {"torch": "t", "transformers": "x"}, "elapsed_s": 1.0, "cpu_s": 1.0,
            "load": "load average 0.0"}
    md = long_markdown(full)
    assert "decode compression ran several times" in md
    for row in result["rows"]:
        assert f"| {row['mode']} |" in md


def test_missing_subject_is_a_clear_error(lm, text):
    registry = {k: v for k, v in ALL_POLICIES.items() if k != "pyramid"}
    with pytest.raises(ValueError, match="not registered"):
        long.run_long(lm, text, SETTINGS, registry=registry)


def test_cli_runs_the_long_suite(tmp_path, monkeypatch):
    """`pyramid eval --suite long` over a text file: the JSON and the Markdown its numbers make."""
    import json

    from pyramid_core.cli import main, suite
    from pyramid_core.models import wrap_model
    from tests.tiny_models import tiny_tokenizer

    lm = wrap_model(tiny_model("llama", seed=4).model, tiny_tokenizer(), name="tiny")
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat and a dog ran far away. " * 60)
    monkeypatch.setattr(suite, "load_model", lambda *a, **k: lm)
    monkeypatch.setattr(long, "LONG_DEFAULT", long.LongSettings(prompts=1, prompt_tokens=128, new_tokens=8,
                                                                budgets=(0.9,)))
    out = tmp_path / "long"
    assert main(["eval", "--suite", "long", "--text", str(text), "--out", str(out), "--json"]) == 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["mode"] for r in saved["rows"]][:2] == ["baseline", "pyramid"] and saved["text"] == "text.txt"
    assert out.with_suffix(".md").read_text() == long_markdown(saved)
