"""The GPU scripts (benchmarks/multi_gpu.py, oom_gpu.py) run end to end on the CPU with --tiny, so they do
not fail on first contact with the GPU machine."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_multi_gpu_tiny_runs_every_part_with_equal_tokens(tmp_path):
    results = script("multi_gpu").main(["--tiny", "--out", str(tmp_path)])
    assert "error" not in results["1b"] and "error" not in results["70b"], results
    compared = [run for name in ("auto", "explicit") for run in results["1b"][name]["runs"]]
    assert len(compared) == 4 and all(run["tokens_equal_one_gpu"] for run in compared)
    assert all(run["tokens_per_s"] > 0 for run in results["70b"]["runs"])
    assert json.loads((tmp_path / "multi_gpu.json").read_text())["tiny"] is True
    assert "tokens equal one GPU" in (tmp_path / "multi_gpu.md").read_text()


def test_multi_gpu_part_failure_is_written_down(tmp_path, monkeypatch):
    module = script("multi_gpu")
    monkeypatch.setattr(module, "materialise", lambda *a: (_ for _ in ()).throw(RuntimeError("no card")))
    results = module.main(["--tiny", "--parts", "70b", "--out", str(tmp_path)])
    assert results["70b"]["error"] == "RuntimeError: no card"
    assert "failed: RuntimeError: no card" in (tmp_path / "multi_gpu.md").read_text()


def test_oom_tiny_frees_the_run_and_serves_the_next_request(tmp_path):
    from pyramid_core.out_of_memory import OUT_OF_MEMORY

    results = script("oom_gpu").main(["--tiny", "--out", str(tmp_path)])
    assert results["too_big"]["ok"] is False and results["too_big"]["message"] == OUT_OF_MEMORY
    assert results["normal_after"]["ok"] and results["memory_back"] and results["model_still_loaded"]
