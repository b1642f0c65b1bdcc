"""training/grid_sample.py: a cell's 95% interval, and the grid table it writes."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
from grid_sample import table, wilson  # noqa: E402


@pytest.mark.parametrize("right, n, low, high", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634),
                                                 (10, 10, 0.7225, 1.0)])
def test_wilson_interval_matches_the_textbook(right, n, low, high):
    """Wilson's 95% score interval for 0, 5 and 10 of 10 (Newcombe 1998, table I)."""
    got = wilson(right, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_the_table_has_a_row_a_length_and_a_cell_a_depth():
    cells = [{"length": length, "depth": depth, "right": 36, "n": 40}
             for length in (512, 1024, 2048, 3072, 4096) for depth in (0.0, 0.25, 0.5, 0.75, 1.0)]
    cells[-1]["right"] = 33
    lines = table(cells).splitlines()
    assert len(lines) == 2 + 5 and lines[2].startswith("| 512 |") and lines[-1].count("|") == 7
    assert "33/40 (82%" in lines[-1] and "36/40 (90%" in lines[2]
