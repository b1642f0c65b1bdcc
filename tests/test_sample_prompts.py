"""The embedded model reads: it loads offline and the baseline (full cache, greedy) answers the stored
sample prompts as pyramid_core/assets/sample_prompts.json expects, through the same path as the CLI and the app."""

import json

import pytest

from pyramid_core.engine import Sampling
from pyramid_core.models import load_model
from pyramid_core.policies import FullPolicy
from pyramid_core.resources import asset
from pyramid_core.pipeline import run_generation

SAMPLES = json.loads(asset("sample_prompts.json").read_text())


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded", device="cpu")


def test_samples_cover_the_kinds_the_studio_needs():
    names = [s["name"] for s in SAMPLES]
    assert len(SAMPLES) >= 4 and len(set(names)) == len(names)
    assert {s["kind"] for s in SAMPLES} == {"question", "continuation"}
    for s in SAMPLES:
        assert s["answer"]
        if s["kind"] == "question":
            assert s["prompt"].endswith("\nAnswer:") and "\n\nQuestion: " in s["prompt"]


def test_the_needle_sits_3000_tokens_back(embedded):
    needle = next(s for s in SAMPLES if "needle" in s["name"])
    ids = embedded.tokenizer(needle["prompt"]).input_ids
    fact = embedded.tokenizer(needle["prompt"].split(needle["answer"])[0]).input_ids
    assert len(ids) - len(fact) >= 3000


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["name"] for s in SAMPLES])
def test_baseline_answers_the_sample(embedded, sample):
    out = run_generation(embedded, sample["prompt"], FullPolicy(), max_new_tokens=12, sampling=Sampling())
    first_line = out["text"].split("\n", 1)[0].strip()
    if sample["kind"] == "question":
        assert first_line == sample["answer"], out["text"]
    else:
        assert first_line.split()[0].strip(",.;") == sample["answer"], out["text"]
