"""The reading evaluation (pyramid_core/reading.py) against transformers' own greedy generation, its
scoring rule, its summary, and the stored held-out tasks."""

import gzip
import json

import pytest

from pyramid_core import reading
from pyramid_core.models import wrap_model
from tests.tiny_models import tiny_model, tiny_tokenizer


def test_answer_matches_the_first_line_only():
    assert reading.answer_matches(" 48213\nQuestion: more", "48213")
    assert reading.answer_matches(" Vera Redfern.\n", "vera redfern")
    assert not reading.answer_matches(" 4821\n", "48213")
    assert not reading.answer_matches("\n48213", "48213")  # the answer must come before the first newline
    assert not reading.answer_matches(" 48213 and 7730\n", "48213")


@pytest.fixture(scope="module")
def tiny():
    lm = tiny_model("llama", seed=3)
    tok = tiny_tokenizer()
    return wrap_model(lm.model, tok, name="tiny"), tok


def hf_greedy(lm, tok, prompt: str, stops: list[int]) -> str:
    """The reference: transformers' generate, greedy, stopped at a newline token or EOS."""
    ids = tok(prompt, return_tensors="pt").input_ids
    out = lm.model.generate(ids, max_new_tokens=reading.MAX_ANSWER_TOKENS, do_sample=False,
                            eos_token_id=stops, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_score_gives_transformers_greedy_answer(tiny):
    lm, tok = tiny
    stops = reading.newline_ids(tok) + [tok.eos_token_id]
    prompts = ["the cat sat on the mat", "a dog ran", "the mat sat on a cat far away"]
    expected = [hf_greedy(lm, tok, p, stops).split("\n", 1)[0].strip() for p in prompts]
    tasks = [{"kind": "single", "prompt": p, "answer": e, "length": 512, "depth": 0.5}
             for p, e in zip(prompts, expected)]
    tasks.append({"kind": "story", "prompt": prompts[0], "answer": expected[0] + " not", "length": 512, "depth": None})
    results = reading.score(lm, tasks, batch=4)  # padded rows of different lengths in one batch
    assert [r["given"] for r in results[:3]] == expected
    assert [r["right"] for r in results] == [True, True, True, False]
    assert all(r["kv_share"] == pytest.approx(1.0) for r in results)


def test_newline_ids_cover_the_newline_token():
    from transformers import AutoTokenizer

    from pyramid_core.models import EMBEDDED_DIR

    tok = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    stops = reading.newline_ids(tok)
    assert tok("\n", add_special_tokens=False).input_ids[0] in stops
    assert tok(" Paris", add_special_tokens=False).input_ids[0] not in stops


def test_summary_counts_kinds_and_grid():
    results = [
        {"kind": "single", "length": 512, "depth": 0.0, "right": True, "kv_share": 1.0},
        {"kind": "single", "length": 512, "depth": 0.0, "right": False, "kv_share": 0.5},
        {"kind": "single", "length": 1024, "depth": 1.0, "right": True, "kv_share": 0.5},
        {"kind": "story", "length": 512, "depth": None, "right": True, "kv_share": 1.0},
    ]
    s = reading.summary(results)
    assert s["accuracy"] == {"single": 2 / 3, "story": 1.0}
    assert s["count"] == {"single": 3, "story": 1}
    assert s["grid"] == {"512": {"0": 0.5}, "1024": {"1": 1.0}}
    assert s["kv_share"] == pytest.approx(0.75)


def test_load_tasks_limits_each_cell(tmp_path):
    path = tmp_path / "tasks.jsonl.gz"
    rows = [{"kind": "single", "length": 512, "depth": d, "prompt": "p", "answer": "a"} for d in (0, 0, 0, 1)]
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    assert len(reading.load_tasks(path)) == 4
    assert [t["depth"] for t in reading.load_tasks(path, limit=2)] == [0, 0, 1]
    with pytest.raises(ValueError, match="no reading tasks"):
        reading.load_tasks(tmp_path / "missing.jsonl.gz")


def test_load_tasks_keeps_the_asked_kinds_in_order(tmp_path):
    path = tmp_path / "tasks.jsonl.gz"
    rows = [{"kind": k, "length": 512, "depth": None, "prompt": f"p{i}", "answer": "a"}
            for i, k in enumerate(("story", "single", "story", "quote"))]
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    assert [t["prompt"] for t in reading.load_tasks(path, kinds=["story"])] == ["p0", "p2"]
    assert [t["prompt"] for t in reading.load_tasks(path, kinds=["quote", "story"])] == ["p0", "p2", "p3"]
    with pytest.raises(ValueError, match=r"no \['riddle'\] tasks.*holds \['quote', 'single', 'story'\]"):
        reading.load_tasks(path, kinds=["riddle"])


def test_stored_tasks_are_in_the_answer_format():
    tasks = reading.load_tasks()
    kinds = {t["kind"] for t in tasks}
    assert {"single", "multi", "two", "story", "quote"} <= kinds
    for t in tasks:
        assert t["prompt"].endswith("\nAnswer:") and "\n\nQuestion: " in t["prompt"]
        assert t["answer"] and "\n" not in t["answer"]
        assert t["prompt_tokens"] <= t["length"] <= 4096
    grid = {(t["length"], t["depth"]) for t in tasks if t["kind"] == "single"}
    assert {n for n, _ in grid} == {512, 1024, 2048, 3072, 4096} and {d for _, d in grid} == {0, 0.25, 0.5, 0.75, 1}


def run_reading_cli(tmp_path, lm, monkeypatch, tasks: list[tuple[str, float | None]], *flags: str):
    """`eval --reading` over a task file of (kind, depth) tasks on the tiny model: (its JSON, its Markdown)."""
    from pyramid_core.cli import eval as cli_eval
    from pyramid_core.cli import main

    path = tmp_path / "tasks.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for kind, depth in tasks:
            f.write(json.dumps({"kind": kind, "length": 512, "depth": depth, "prompt": "the cat sat on the mat " * 8,
                                "answer": "mat", "prompt_tokens": 50}) + "\n")
    monkeypatch.setattr(cli_eval, "load_model", lambda *a, **k: lm)
    out = tmp_path / "report"
    assert main(["eval", "--reading", "--reading-file", str(path), "--out", str(out), "--json", *flags]) == 0
    return json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text()


def test_cli_reading_report(tmp_path, tiny, monkeypatch):
    """eval --reading runs the baseline and a mode over a task file and writes the JSON and Markdown."""
    result, md = run_reading_cli(tmp_path, tiny[0], monkeypatch, [("single", 0.0), ("single", 1.0)],
                                 "--modes", "streaming")
    assert set(result["modes"]) == {"baseline", "streaming"}
    assert result["modes"]["baseline"]["summary"]["count"] == {"single": 2}
    assert "| baseline |" in md and "| streaming |" in md and "depth 0" in md
    by_depth = md.split("every mode:")[1]  # the per-depth table names every mode
    assert "| baseline | " in by_depth and "| streaming | " in by_depth


def test_cli_reading_kinds_score_only_those_kinds(tmp_path, tiny, monkeypatch):
    """eval --reading --reading-kinds story answers the stories alone and says so in its settings, which
    training/sort_misses.py reads to pair results with tasks."""
    result, md = run_reading_cli(tmp_path, tiny[0], monkeypatch, [("single", None), ("story", None), ("single", None)],
                                 "--reading-kinds", "story")
    assert result["settings"]["kinds"] == ["story"] and result["settings"]["count"] == 1
    assert [r["kind"] for r in result["modes"]["baseline"]["results"]] == ["story"]
    measured = md.split("## What we measured")[1]
    assert "of the story tasks (target 70%" in measured and "single" not in measured  # no target for unscored kinds
