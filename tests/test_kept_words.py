"""The kept-words view (visual/kept_words.py): the text shaded by what a mode's cache holds."""

from __future__ import annotations

import dataclasses
import re

import pytest

from pyramid_core.trace import LayerAttention, StepRecord
from visual.kept_words import DROPPED_COLOR, held_share, kept_words_html, kept_words_pair, newest_attention

TOKENS = ["The", " code", " is", " 482", "13", ".", " Bye"]


def record(kept_positions, attention=None, step=3, seen=7):
    return StepRecord(step=step, phase="decode" if step else "prefill", token_ids=[5], finished=[True],
                      kept_tokens=[len(p) for p in kept_positions],
                      kept_tokens_per_row=[[len(p) for p in kept_positions]], kv_bytes=10, peak_kv_bytes=10,
                      step_time_s=0.01, seen_tokens=seen, kept_positions=kept_positions, attention=attention,
                      policy={})


def run_of(kept, attention=None):
    prefill = record([list(range(5)), list(range(5))], step=0, seen=5)
    return [prefill, record(kept, attention)]


def spans(page: str) -> list[tuple[str, str, str]]:
    """(title, style, text) of every token span."""
    return re.findall(r"<span title='([^']*)' style='([^']*)'>([^<]*)</span>", page)


def test_share_of_layers_and_one_layer():
    r = record([[0, 1, 3, 4], [0, 3, 6]])
    assert held_share(r, None) == {0: 1.0, 1: 0.5, 3: 1.0, 4: 0.5, 6: 0.5}
    assert held_share(r, 1) == {0: 1.0, 3: 1.0, 6: 1.0}
    with pytest.raises(ValueError, match="layer must be in"):
        held_share(r, 2)


def test_newest_attention_is_the_mean_over_heads_and_layers():
    att = [LayerAttention(0, [0, 3], [[0.2, 0.8], [0.4, 0.6]]), LayerAttention(1, [3, 6], [[1.0, 0.0], [0.5, 0.5]])]
    r = record([[0, 3], [3, 6]], att)
    assert newest_attention(r, 0) == pytest.approx({0: 0.3, 3: 0.7})
    assert newest_attention(r, None) == pytest.approx({0: 0.15, 3: 0.725, 6: 0.125})
    assert newest_attention(record([[0], [0]]), None) == {}


def test_the_needle_is_shaded_in_one_mode_and_struck_in_the_other():
    """The view's purpose: a token one mode holds and another dropped reads differently, by name."""
    keeps = run_of([[0, 1, 2, 3, 4, 5, 6], [0, 3, 4, 6]])
    drops = run_of([[0, 5, 6], [0, 5, 6]])
    page = kept_words_pair({"pyramid": keeps, "streaming": drops}, {"pyramid": TOKENS, "streaming": TOKENS},
                           ["pyramid", "streaming"])
    left, right = page.split("<b>streaming</b>")
    assert [t for _, _, t in spans(left)] == TOKENS  # the text, token by token, in order
    needle = {t: (title, style) for title, style, t in spans(left)}[" 482"]
    assert "held by 2 of 2 layers" in needle[0] and "background:rgba(31,119,180,0.75)" in needle[1]
    assert "held by 1 of 2 layers" in dict((t, ti) for ti, _, t in spans(left))[" code"]
    struck = {t: style for _, style, t in spans(right)}[" 482"]
    assert DROPPED_COLOR in struck and "line-through" in struck
    assert "holds 4 of 7 tokens" not in right and "holds 3 of 7 tokens" in right
    assert "step 3" in left and "every layer" in left


def test_one_layer_and_attention_on_hover():
    att = [LayerAttention(0, [0, 3], [[0.25, 0.75]]), LayerAttention(1, [0, 5], [[0.5, 0.5]])]
    page = kept_words_html("pyramid", run_of([[0, 3], [0, 5]], att), TOKENS, layer=0)
    titles = {t: title for title, _, t in spans(page)}
    assert "held in layer 0" in titles[" 482"] and "attention of the newest token 0.7500" in titles[" 482"]
    assert "dropped in layer 0" in titles["."] and "attention" not in titles["."]
    assert "layer 0: holds 2 of 7 tokens" in page


def test_text_is_escaped_and_a_missing_run_says_so():
    page = kept_words_html("pyramid", run_of([[0, 1], [0]]), ["<b>", "&", "x", "y", "z", "a", "b"])
    assert "&lt;b&gt;" in page and "&amp;" in page and "<b><" not in page
    assert "streaming was not run" in kept_words_pair({}, {}, ["streaming"])


def test_token_texts_are_each_tokens_own_decoding():
    """The view's texts: every prompt position and every mode's generated token, each decoded alone (the
    batch of distinct ids must give what one decode per position gives, repeats and shared ids included)."""
    from pyramid_core import load_model
    from pyramid_core.pipeline import encode_prompt
    from studio.kept_words import token_texts

    lm = load_model("embedded")
    prompt = "Mara Voss, aged 97, wrote 4821 letters. Mara Voss — é — 4821 again."
    ids = encode_prompt(lm, prompt, False)[0].tolist()
    generated = {"baseline": ids[:3] + [ids[0]], "streaming": [ids[-1], 7, 7]}
    runs = {m: [dataclasses.replace(record([[0]]), token_ids=[t]) for t in tokens] for m, tokens in generated.items()}
    texts = token_texts(lm, prompt, runs)
    decode = lm.tokenizer.decode
    for mode, tokens in generated.items():
        assert texts[mode] == [decode([i]) for i in ids + tokens]
    assert len(set(ids)) < len(ids) and texts["baseline"][-1] == texts["baseline"][0]  # repeats were decoded
