"""The installable package: assets found as package data, the console script's entry point, the command
line from another folder, dependencies that agree with the requirements files, and the library's
imports (never the app's packages, never the benchmarks)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest

import pyramid_core
from pyramid_core.resources import asset

PACKAGE = Path(pyramid_core.__file__).parent
ROOT = Path(__file__).resolve().parent.parent  # the checkout: pyproject.toml and requirements*.txt
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_assets_are_found_through_importlib_resources():
    embedded = asset("embedded")
    assert embedded == resources.files("pyramid_core") / "assets" / "embedded"
    assert (embedded / "config.json").is_file() and (embedded / "tokenizer.json").is_file()
    for name in ("recurformer-embedded-25/adapter.json", "heldout.txt", "calibration.txt",
                 "reading_eval.jsonl.gz", "sample_prompts.json"):
        assert asset(name).is_file(), name


def test_every_asset_is_package_data():
    """A file under pyramid_core/assets that no package-data pattern matches would be left out of an install."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["pyramid_core"]
    files = [p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "assets").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns) for f in files)


def test_console_script_entry_point_runs_generate_json(checkpoint, capsys):
    module, _, function = PYPROJECT["project"]["scripts"]["pyramid"].partition(":")
    main = getattr(importlib.import_module(module), function)
    assert main(["generate", "--model", checkpoint, "--prompt", "the cat sat", "--max-new-tokens", "3",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["token_ids"]) == 3 and out["prompt_tokens"] > 0


def test_python_m_runs_from_another_folder(tmp_path):
    """`python -m pyramid_core` from a folder that is not the checkout, with the default model: the
    embedded one, found as package data."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "pyramid_core", "generate", "--prompt", "Once upon a time",
                           "--max-new-tokens", "2", "--json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert len(json.loads(done.stdout)["token_ids"]) == 2


def requirements(name: str) -> set[str]:
    lines = (ROOT / name).read_text().splitlines()
    return {re.sub(r"\s+", "", line) for line in lines if line.strip() and not line.startswith(("#", "-r"))}


def test_dependencies_agree_with_the_requirements_files():
    project = PYPROJECT["project"]
    deps = {re.sub(r"\s+", "", d) for d in project["dependencies"]}
    extras = {k: {re.sub(r"\s+", "", d) for d in v} for k, v in project["optional-dependencies"].items()}
    assert deps | extras["app"] | extras["cuda"] == requirements("requirements.txt")
    assert extras["dev"] == requirements("requirements-dev.txt")
    assert "transformers>=5.17,<6" in deps  # 5.17 (the GPU machines) through the newest 5.x


def library_modules() -> list[Path]:
    """pyramid_core's modules but the command line and the benchmarks, which may import anything."""
    return [p for p in PACKAGE.rglob("*.py") if not {"cli", "bench"} & set(p.relative_to(PACKAGE).parts)]


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_the_library_imports_neither_the_app_nor_the_benchmarks(path):
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    for name in names:
        assert name.split(".")[0] not in ("gradio", "plotly", "visual", "studio"), f"{path.name} imports {name}"
        assert "bench" not in name.lstrip(".").split("."), f"{path.name} imports {name}"


def test_no_cli_module_lies_flat_at_the_package_root():
    assert not list(PACKAGE.glob("cli_*.py"))
    from pyramid_core.cli import COMMANDS

    assert set(COMMANDS) == {"generate", "eval", "bench", "recency", "convert"}
