"""`bench modes` on a CPU with a tiny model: every mode runs, each cell has its ratio to the baseline,
and JSON and Markdown are written."""

import json

from pyramid_core.bench.modes import Grid, run_grid
from pyramid_core.policies import ALL_POLICIES
from tests.tiny_models import tiny_model


def test_modes_grid_covers_every_mode_and_writes_both_files(tmp_path):
    grid = Grid(shapes=("tiny",), batches=(1, 2), prompts=(24, 40), new_tokens=4, warmup_tokens=2)
    results = run_grid(grid, tmp_path, load=lambda shape, longest: tiny_model("llama", layers=2), name="m")
    cells = results["cells"]
    assert {(c["mode"], c["batch"], c["prompt"]) for c in cells} == \
        {(m, b, p) for m in ALL_POLICIES for b in (1, 2) for p in (24, 40)}
    assert all(c["decode_tokens_per_s"] > 0 and c["vs_baseline"] > 0 for c in cells)
    assert all(c["warmup_s"] == 0.0 for c in cells)  # eager on a CPU: no step did one-time work
    assert all(c["vs_baseline"] == 1.0 for c in cells if c["mode"] == "baseline")
    assert all(c["policy_ms_per_step"] >= 0 for c in cells if c["batch"] == 1)
    assert all(c["kv_tokens_held"] < 2 * (40 + 3) for c in cells if c["mode"] == "streaming" and c["prompt"] == 40)
    written = json.loads((tmp_path / "m.json").read_text())
    assert len(written["cells"]) == len(cells)
    assert (tmp_path / "m.md").read_text().count("| tiny |") == len(cells)
