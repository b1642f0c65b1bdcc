"""training/rank_snapshots.py: the pick that decides which snapshot of a run ships."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
from rank_snapshots import pick  # noqa: E402


def row(name, ppl, single, story):
    return {"model": name, "ppl": ppl, "accuracy": {"single": single, "story": story, "multi": 0.0},
            "worst_single_cell": single}


def test_pick_prefers_reading_within_the_perplexity_ceiling():
    rows = [row("a", 36.0, 0.80, 0.30), row("b", 38.0, 0.95, 0.60), row("c", 36.9, 0.85, 0.40)]
    assert pick(rows, 37.0)["model"] == "c"  # b reads best but is over the ceiling
    assert pick(rows, 40.0)["model"] == "b"
    assert pick(rows, 30.0) is None


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
