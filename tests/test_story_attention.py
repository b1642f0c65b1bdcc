"""training/story_attention.py: the last prompt token's attention summed over sentences of the document."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
import story_attention as sa  # noqa: E402

from pyramid_core import recording  # noqa: E402

DOC = "the cat sat on the mat. a dog ran far away. the cat ran on the mat."


def test_sentence_of_finds_the_sentence_that_holds_the_words():
    assert DOC[slice(*sa.sentence_of(DOC, "dog"))] == " a dog ran far away."
    assert DOC[slice(*sa.sentence_of(DOC, "cat sat"))] == "the cat sat on the mat."
    assert sa.sentence_of(DOC, "horse") is None and sa.sentence_of(DOC, "") is None


@pytest.fixture(scope="module")
def tiny_lm():
    from tests.tiny_models import tiny_model, tiny_tokenizer

    lm = tiny_model("llama")
    lm.tokenizer = tiny_tokenizer()
    return lm


def test_sentence_masses_are_shares_of_the_last_tokens_attention(tiny_lm):
    """One query (the last token), the constant restored; two sentences' masses add up to their union's, and the
    whole text's mass is what the BOS token does not take."""
    before = recording.PREFILL_RECORD_QUERIES
    offsets, layers = sa.last_token_attention(tiny_lm, DOC)
    assert recording.PREFILL_RECORD_QUERIES == before and len(layers) == tiny_lm.config.num_hidden_layers
    first, second = sa.sentence_of(DOC, "cat sat"), sa.sentence_of(DOC, "dog")
    for layer in layers:
        assert layer.num_queries == 1
        a, b = sa.span_mass(offsets, layer, first), sa.span_mass(offsets, layer, second)
        assert 0 < a < 1 and 0 < b < 1
        assert sa.span_mass(offsets, layer, (first[0], second[1])) == pytest.approx(a + b, abs=1e-6)
        special = [j for j, (start, end) in enumerate(offsets) if start == end]  # BOS, where the tokenizer adds one
        rest = sum(layer.weights[h][layer.positions.index(j)] for h in range(len(layer.weights)) for j in special)
        assert sa.span_mass(offsets, layer, (0, len(DOC))) + rest / len(layer.weights) == pytest.approx(1, abs=1e-5)


def test_the_table_compares_the_asked_sentence_with_the_named_ones():
    rows = [{"right": True, "layers": [(0.3, None)]},
            {"right": False, "layers": [(0.1, 0.2)]}, {"right": False, "layers": [(0.4, 0.1)]}]
    table = sa.markdown(rows)
    assert "right answers (1)" in table and "misses (2)" in table
    assert "| 0 | 0.300 | 0.250 | 0.150 | 1 of 2 |" in table
