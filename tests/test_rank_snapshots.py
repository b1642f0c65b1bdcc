"""training/rank_snapshots.py: the pick that decides which snapshot of a run ships."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
from rank_snapshots import markdown, pick, sample_answers, sample_misses  # noqa: E402


def row(name, ppl, single, story):
    return {"model": name, "ppl": ppl, "accuracy": {"single": single, "story": story, "multi": 0.0},
            "worst_single_cell": single}


def test_pick_prefers_reading_within_the_perplexity_ceiling():
    rows = [row("a", 36.0, 0.80, 0.30), row("b", 38.0, 0.95, 0.60), row("c", 36.9, 0.85, 0.40)]
    assert pick(rows, 37.0)["model"] == "c"  # b reads best but is over the ceiling
    assert pick(rows, 40.0)["model"] == "b"
    assert pick(rows, 30.0) is None


def test_pick_beats_the_starting_model_or_picks_nothing(tmp_path):
    """A run that made its --init worse ships none of its snapshots; the init's own row is never the pick."""
    init = row("init", 35.6, 0.93, 0.60)
    rows = [row("step-1000", 34.9, 0.91, 0.55), row("final", 36.4, 0.92, 0.50)]
    assert pick(rows, 37.0)["model"] == "step-1000"  # without the floor, the best of a worse run
    assert pick(rows + [init], 37.0, beat=init) is None
    rows.append(row("step-2000", 35.0, 0.93, 0.62))
    assert pick(rows + [init], 37.0, beat=init)["model"] == "step-2000"
    (tmp_path / "run.json").write_text(json.dumps(rows[:2]))
    (tmp_path / "init.json").write_text(json.dumps([init]))
    cmd = [sys.executable, str(ROOT / "training" / "rank_snapshots.py"), "--pick", str(tmp_path / "run.json"),
           str(tmp_path / "init.json"), "--beat", str(tmp_path / "init.json")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""


def test_pick_merges_rank_files_scored_apart(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps([row("early", 36.5, 0.70, 0.30)]))
    (tmp_path / "two.json").write_text(json.dumps([row("late", 36.8, 0.90, 0.50), row("over", 50, 1, 1)]))
    cmd = [sys.executable, str(ROOT / "training" / "rank_snapshots.py"), "--pick",
           str(tmp_path / "one.json"), str(tmp_path / "two.json"), "--out", str(tmp_path / "all")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "late"
    table = (tmp_path / "all.md").read_text()
    assert all(name in table for name in ("early", "late", "over"))
    none = subprocess.run(cmd[:-2] + ["--max-ppl", "30"], capture_output=True, text=True)
    assert none.returncode == 1 and none.stdout == ""


def test_pick_passes_over_a_model_that_misses_a_sample_prompt():
    rows = [row("reads more", 30.0, 0.95, 0.50), row("answers the samples", 31.0, 0.85, 0.40)]
    rows[0]["samples_missed"], rows[1]["samples_missed"] = ["story + question"], []
    assert pick(rows, 37.0)["model"] == "answers the samples"
    rows[1]["samples_missed"] = ["several facts"]
    assert pick(rows, 37.0) is None


def test_the_shipped_model_misses_no_sample_prompt_and_a_random_one_misses_all():
    """The rank's own check of the samples (through the reading evaluation's batch path) agrees with the
    studio path's test (tests/test_sample_prompts.py) on the shipped model, and is not trivially satisfied."""
    from pyramid_core.models import load_model
    from tests.tiny_models import tiny_model, tiny_tokenizer

    assert sample_misses(load_model("embedded", device="cpu")) == []
    names = [s["name"] for s in json.loads((ROOT / "pyramid_core/assets/sample_prompts.json").read_text())]
    random_lm = tiny_model("llama", max_position_embeddings=16384)  # the needle prompt is ~12k tiny tokens
    random_lm.tokenizer = tiny_tokenizer()
    said = sample_answers(random_lm)  # what each answered is kept, right or wrong
    assert list(said) == names and all(isinstance(a["said"], str) and not a["right"] for a in said.values())


def test_the_table_splits_stories_by_what_they_ask_and_shows_the_list_probe():
    """Rows scored since the split and the probe show them; older rank files' rows show '-' in their place."""
    new = {**row("new", 33.0, 0.9, 0.5), "story_asks": {"who": 0.406, "count": 0.792, "where": 0.542},
           "list_probe": 0.25, "list_probe_ahead": 0.625, "samples_missed": []}
    lines = markdown([new, row("old", 31.0, 0.9, 0.4)]).splitlines()
    assert "story who / count / where" in lines[0] and "several-facts list" in lines[0]
    assert "| 41% / 79% / 54% | 25% / 62% |" in lines[2] and "| - / - / - | - |" in lines[3]
