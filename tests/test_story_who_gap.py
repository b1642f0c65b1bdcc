"""training/story_who_gap.py: the story variants differ from their base in the one part each names."""

import random
import re
import sys
from pathlib import Path

from tokenizers import Tokenizer

from pyramid_core.resources import asset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
import reading_tasks as rt  # noqa: E402
import story_who_gap as gap  # noqa: E402

TOKENIZER = Tokenizer.from_file(str(asset("embedded") / "tokenizer.json"))
PARAS = asset("heldout.txt").read_text().split("\n\n")
TEXTS = ["\n\n".join(PARAS[i:i + 20]) for i in range(0, 400, 20)]
HELD_ACTS = rt.Pools("heldout", random.Random(0)).acts


def test_held_out_traits_make_training_stories_like_held_out_ones():
    """shape + spread + noaside + noshare: distinct people, every event told in the held-out sentence shape, no
    aside; each story asks "who"."""
    maker = gap.Variant(TEXTS, TOKENIZER, 3, ("shape", "spread", "noaside", "noshare"))
    asides = [max(re.split(r"\{\w+\}", f), key=len) for f in rt.STORY_ASIDES + rt.FAMILY_ASIDES]
    for _ in range(40):
        events, k, question, answer = maker.story_plan()
        assert len({e.agent for e in events}) == len(events) and answer == events[k].agent
        texts, _ = maker.story_texts(events, k)
        assert len(texts) == len(events)
        told = " ".join(t for _, t in texts)
        for e in events:
            assert f"{e.agent} {e.verb.past} {e.count} {e.noun} {e.place}." in told, (e, told)
        assert maker.story_asides(events, k) == []
        assert not any(a in maker.story(300).document for a in asides)


def test_training_stories_without_traits_keep_their_own_build():
    """The plain variant still has people doing two things and asides (what the traits take away)."""
    maker = gap.Variant(TEXTS, TOKENIZER, 4)
    plans = [maker.story_plan() for _ in range(200)]
    assert any(len({e.agent for e in events}) < len(events) for events, *_ in plans)
    assert any(maker.story_asides(events, k) for events, k, *_ in plans)


def test_held_out_swaps_change_only_their_part():
    base = gap.heldout_maker(TEXTS, TOKENIZER, 5).pools
    coined = gap.heldout_maker(TEXTS, TOKENIZER, 5, "coined words").pools
    lexicon = gap.heldout_maker(TEXTS, TOKENIZER, 5, "lexicon words").pools
    places = gap.heldout_maker(TEXTS, TOKENIZER, 5, "composed places").pools
    assert base.acts == HELD_ACTS
    for swapped in (coined, lexicon):
        assert [a[3] for a in swapped.acts] == [a[3] for a in HELD_ACTS]  # the places stay
        assert not {a[0] for a in swapped.acts} & {a[0] for a in HELD_ACTS}
    assert {a[0] for a in lexicon.acts} <= {v.past for v in rt.STORY_VERBS}
    assert [a[:3] for a in places.acts] == [a[:3] for a in HELD_ACTS]
    assert not {a[3] for a in places.acts} & {a[3] for a in HELD_ACTS}
    # people: listed first names of the training part in the swap, of the held-out part as the evaluation has them
    swapped = gap.heldout_maker(TEXTS, TOKENIZER, 5, "training names").pools
    for pools, held in ((swapped, False), (base, True)):
        firsts = [p.split()[0] for p in (pools.person() for _ in range(80)) if p.split()[0] in rt.FIRST]
        assert firsts and all(rt.heldout(f) == held for f in firsts), (held, firsts)


def test_who_accuracy_scores_exactly_n_who_questions(monkeypatch):
    """Only "who" questions are scored, n of them, and the share is of those (a fake scorer: right on even calls)."""
    asked = []

    def fake_answers(model, tok, task, bos, eos):
        asked.append(task.question)
        return len(asked) % 2 == 0

    monkeypatch.setattr(gap, "answers", fake_answers)
    share = gap.who_accuracy(None, TOKENIZER, gap.heldout_maker(TEXTS, TOKENIZER, 6), 7, (200, 300), 1, 2, 6)
    assert len(asked) == 7 and all(q.lower().startswith(gap.WHO) for q in asked)
    assert share == 3 / 7
