"""`bench modes` on a CPU with a tiny model: every mode runs in interleaved rounds, each cell has its
median rate, spread and paired ratio to the baseline, and JSON and Markdown are written."""

import json
import statistics

from pyramid_core.bench.modes import Grid, mode_policies, round_order, run_grid, summary
from pyramid_core.policies import h2o
from pyramid_core.policies import ALL_POLICIES
from tests.tiny_models import tiny_model


def runs_of(rates):
    return [{"decode_tokens_per_s": x, "warmup_s": 0.0, "prefill_s": 0.1, "kv_tokens_held": 9, "position": 0}
            for x in rates]


def test_a_round_where_everything_ran_slow_leaves_the_paired_ratio_unchanged():
    """The noise the repeats are for: a slow round (another process, clocks) must not move the ratio,
    as it would if the mode's median were divided by the baseline's median from other rounds."""
    base, mode = [100.0, 104.0, 96.0], [80.0, 78.0, 84.0]
    slow_base, slow_mode = [100.0, 52.0, 96.0], [80.0, 39.0, 84.0]  # round 1 at half speed for both
    before, after = summary(runs_of(mode), base, 1), summary(runs_of(slow_mode), slow_base, 1)
    assert before["vs_baseline"] == after["vs_baseline"] == 0.8  # the median of 0.8, 0.75, 0.875
    unpaired = statistics.median(slow_mode) / statistics.median(slow_base)
    assert unpaired != statistics.median(mode) / statistics.median(base)  # what pairing avoids
    assert after["decode_tokens_per_s"] == 80.0 and after["step_ms"] == 12.5
    assert after["spread"] == (84.0 - 39.0) / 80.0
    assert after["vs_baseline_runs"] == [0.8, 0.75, 0.875]


def test_rounds_put_every_mode_at_every_position_and_vary_who_follows_the_baseline():
    """A fixed order would give one mode the cold first slot, or always the slot after the baseline."""
    for n in (2, 5, 7, 8):
        modes = ["baseline"] + [f"m{i}" for i in range(1, n)]
        orders = [round_order(modes, r) for r in range(n)]
        assert all(sorted(order) == sorted(modes) for order in orders)
        for position in range(n):
            assert sorted(order[position] for order in orders) == sorted(modes)
        if n > 3:
            after_base = {o[o.index("baseline") + 1] for o in orders if o[-1] != "baseline"}
            assert len(after_base) > 1


def test_short_runs_get_more_rounds_until_every_mode_has_decoded_long_enough(monkeypatch):
    """A cell whose runs decode briefly runs rounds until its fastest mode has decoded min_decode_s in all
    (its noise is the host's, which more runs average out), within max_repeats; a cell of long runs keeps
    `repeats`; min_decode_s 0 keeps `repeats` whatever the runs' length."""
    from pyramid_core.bench import modes

    rates = {"baseline": 1000.0, "fast": 4000.0}  # tokens/s: 64 tokens at batch 2 take 0.128 s and 0.032 s
    monkeypatch.setattr(modes, "decode_run", lambda lm, policy, batch, prompt, new_tokens, reserve: {
        "decode_tokens_per_s": rates[policy], "step_ms": 1e3 * batch / rates[policy], "warmup_s": 0.0,
        "prefill_s": 0.0, "kv_tokens_held": 1})

    def rounds_run(min_decode_s, max_repeats=15):
        grid = Grid(new_tokens=64, repeats=3, min_decode_s=min_decode_s, max_repeats=max_repeats)
        runs = modes.rounds(None, {"baseline": "baseline", "fast": "fast"}, 2, 24, grid)
        assert len(runs["baseline"]) == len(runs["fast"])
        return len(runs["fast"])

    assert rounds_run(0.3) == 10  # 0.032 s a run: 9 rounds make 0.288 s, 10 make 0.32
    assert rounds_run(0.3, max_repeats=6) == 6
    assert rounds_run(0.05) == 3 and rounds_run(0.0) == 3


def test_modes_grid_covers_every_mode_and_writes_both_files(tmp_path):
    grid = Grid(shapes=("tiny",), batches=(1, 2), prompts=(24, 40), new_tokens=4, warmup_tokens=2, repeats=2)
    results = run_grid(grid, tmp_path, load=lambda shape, longest: tiny_model("llama", layers=2), name="m")
    cells = results["cells"]
    assert {(c["mode"], c["batch"], c["prompt"]) for c in cells} == \
        {(m, b, p) for m in ALL_POLICIES for b in (1, 2) for p in (24, 40)}
    assert all(c["decode_tokens_per_s"] > 0 and c["vs_baseline"] > 0 for c in cells)
    assert all(c["repeats"] == 2 and len(c["decode_tokens_per_s_runs"]) == 2 for c in cells)
    assert all(c["decode_tokens_per_s"] == statistics.median(c["decode_tokens_per_s_runs"]) for c in cells)
    assert all(c["spread"] >= 0 for c in cells)
    assert all(c["vs_baseline_runs"] == [1.0, 1.0] for c in cells if c["mode"] == "baseline")
    # the rounds ran in different orders: the baseline went first, then somewhere else
    assert all(c["order_positions"][0] == 0 and c["order_positions"][1] > 0 for c in cells if c["mode"] == "baseline")
    assert all(c["warmup_s"] == 0.0 for c in cells)  # eager on a CPU: no step did one-time work
    assert all(c["vs_baseline"] == 1.0 for c in cells if c["mode"] == "baseline")
    assert all(c["policy_ms_per_step"] >= 0 for c in cells if c["batch"] == 1)
    assert all(c["kv_tokens_held"] < 2 * (40 + 3) for c in cells if c["mode"] == "streaming" and c["prompt"] == 40)
    written = json.loads((tmp_path / "m.json").read_text())
    assert len(written["cells"]) == len(cells) and written["grid"]["repeats"] == 2
    markdown = (tmp_path / "m.md").read_text()
    assert markdown.count("| tiny |") == len(cells) and "| spread |" in markdown


def test_the_policy_is_timed_over_its_own_run_length(tmp_path):
    """policy_tokens sets the length of the batch-1 run that times the policy; its share is of that run's
    own decode time, so it lies in [0, 1), and a policy that acts at every decode step (H2O) takes time."""
    grid = Grid(shapes=("tiny",), modes=("baseline", "h2o", "streaming"), batches=(1,), prompts=(24,),
                new_tokens=3, warmup_tokens=2, repeats=1, policy_tokens=9)
    cells = run_grid(grid, tmp_path, load=lambda shape, longest: tiny_model("llama", layers=2), name="m")["cells"]
    assert all(c["policy_run_tokens"] == 9 and 0 <= c["policy_share"] < 1 for c in cells)
    assert next(c for c in cells if c["mode"] == "h2o")["policy_ms_per_step"] > 0


def test_the_policy_share_is_the_second_runs_and_the_first_runs_excess_is_warm_up(monkeypatch):
    """A first run that compiled kernels inside the policy's spans must not count as the policy's per-step cost:
    the share is the second identical run's, what the first spent beyond it is policy_warmup_s."""
    from pyramid_core.bench import modes

    runs = iter([(0.5, 2.0, 100), (0.02, 1.0, 100)])  # (policy s, decode s, steps): first, then second
    monkeypatch.setattr(modes, "timed_decode", lambda *args: next(runs))
    timed = modes.policy_time(None, None, 24, 101)
    assert timed["policy_share"] == 0.02 and timed["policy_ms_per_step"] == 0.2
    assert timed["policy_warmup_s"] == 0.48 and timed["policy_run_tokens"] == 101


def test_the_h2o_variants_fix_their_decode_path_whatever_the_switch(monkeypatch):
    for switch in (False, True):
        monkeypatch.setattr(h2o, "FUSED_STEP", switch)
        policies = mode_policies(None, ["h2o", "h2o-slot", "h2o-position"], "tiny", None)
        assert [p.new_state(2).by_slot for p in policies.values()] == [switch, True, False]


def test_a_grid_can_run_the_h2o_variants_side_by_side(tmp_path):
    grid = Grid(shapes=("tiny",), modes=("baseline", "h2o-slot", "h2o-position"), batches=(1,), prompts=(40,),
                new_tokens=6, warmup_tokens=2, repeats=1)
    cells = run_grid(grid, tmp_path, load=lambda shape, longest: tiny_model("llama", layers=2), name="v")["cells"]
    held = {c["mode"]: c["kv_tokens_held"] for c in cells}
    assert set(held) == {"baseline", "h2o-slot", "h2o-position"}
    assert held["h2o-slot"] == held["h2o-position"] < held["baseline"]  # the same budget on both paths


def test_the_command_line_reaches_the_grid(monkeypatch, tmp_path):
    """`bench modes --prompts ... --policy-tokens ...`: each flag lands in the Grid that runs."""
    import argparse

    from pyramid_core.bench import modes, suites
    from pyramid_core.cli.bench import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    grids = []
    monkeypatch.setattr(modes, "run_grid", lambda grid, out, name: grids.append((grid, name)))
    suites.suite_modes(parser.parse_args(["modes", "--quick", "--shapes", "llama2-7b", "--prompts", "1024",
                                          "--policy-tokens", "400", "--out", str(tmp_path)]))
    (grid, name), = grids
    assert grid.prompts == (1024,) and grid.policy_tokens == 400 and grid.new_tokens == 64
    assert grid.min_decode_s == 0.5  # the command line's default: the small shape's cells get more rounds
    assert grid.shapes == ("llama2-7b",) and name == "modes_quick_llama2-7b"
    suites.suite_modes(parser.parse_args(["modes", "--min-decode-s", "0", "--out", str(tmp_path)]))
    assert grids[-1][0].prompts == (1024, 8192) and grids[-1][0].policy_tokens is None
    assert grids[-1][0].min_decode_s == 0.0


def test_reserve_kv_reaches_every_run_of_the_grid(tmp_path, monkeypatch):
    """`bench modes --reserve-kv`: every generation of the grid (measured, warm-up and policy-timing runs)
    reserves its KV, and the flag parses; without it none does."""
    import argparse

    from pyramid_core.bench import modes
    from pyramid_core.cli.bench import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["modes", "--reserve-kv"]).reserve_kv
    seen, real = [], modes.generate
    monkeypatch.setattr(modes, "generate", lambda *a, **k: (seen.append(k["reserve_kv"]), real(*a, **k))[1])
    for reserve in (True, False):
        seen.clear()
        grid = Grid(shapes=("tiny",), modes=("baseline", "pyramid"), batches=(1,), prompts=(24,), new_tokens=4,
                    warmup_tokens=2, repeats=1, reserve_kv=reserve)
        run_grid(grid, tmp_path, load=lambda shape, longest: tiny_model("llama", layers=2), name="r")
        assert len(seen) >= 5 and set(seen) == {reserve}
