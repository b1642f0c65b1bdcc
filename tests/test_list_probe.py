"""training/list_probe.py: the several-facts sample asked about every person, towns rotated, list reversed."""

import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
import list_probe as lp  # noqa: E402

from pyramid_core.resources import asset  # noqa: E402


def test_the_stored_sample_is_one_of_the_questions():
    sample = next(s for s in json.loads(asset("sample_prompts.json").read_text()) if s["name"] == lp.SAMPLE)
    asked = [v for v in lp.variants(sample["prompt"]) if v["prompt"] == sample["prompt"]]
    assert [v["answer"] for v in asked] == [sample["answer"]]


def test_every_person_is_asked_every_town_in_both_orders():
    rows = lp.variants(lp.sample_prompt())
    assert len(rows) == 32
    pairs = collections.Counter((r["asked"], r["answer"], r["order"]) for r in rows)
    assert len(pairs) == 32 and set(pairs.values()) == {1}  # 4 people x 4 towns x 2 orders, once each
    for r in rows:
        facts = lp.FACT.findall(r["prompt"])
        assert len(facts) == 4 and (r["asked"], r["answer"]) in facts  # the answer is stated, once a person
        assert len({p for p, _ in facts}) == 4 and len({t for _, t in facts}) == 4
        assert r["prompt"].endswith(f"Question: Where does {r['asked']} live?\nAnswer:")
    first = [lp.FACT.findall(r["prompt"])[0][0] for r in rows if r["rotation"] == 0]
    assert set(first) == {"Lena", "Rufus Birch"}  # the stored order, and the reversed one


def test_the_table_counts_right_answers_and_names_wrong_ones():
    rows = [{**v, "given": v["answer"] if v["asked"] != "Mabel" else "Ashford",
             "right": v["asked"] != "Mabel" or v["answer"] == "Ashford"} for v in lp.variants(lp.sample_prompt())]
    table = lp.markdown("m", rows)
    assert table.startswith("## m: 26 of 32 right") and "'Ashford' x" in table
    assert table.count("\n| ") == 10  # the header, its rule and 8 arrangements
    assert "| Dunmoor: 'Ashford' |" in table and "| Kelmouth: ok |" in table


def test_answer_scores_say_whether_the_right_town_leads_the_rest():
    """A model that always answers Ashford but ranks the right town next reads; the count says so, and the
    scores are the model's own teacher-forced log-probabilities of each town as the answer."""
    import torch

    from tests.tiny_models import tiny_model, tiny_tokenizer

    rows = [{**v, "given": "Ashford", "right": v["answer"] == "Ashford"} for v in lp.variants(lp.sample_prompt())]
    reads = [{t: (0.0 if t == "Ashford" else -1.0 if t == r["answer"] else -3.0) for t in ("Ashford", "Dunmoor",
              "Kelmouth", "Penhaven")} for r in rows]
    assert lp.ahead_but_favourite(rows, reads) == ("Ashford", 24)
    blind = [{**s, r["answer"]: -5.0} if r["answer"] != "Ashford" else s for r, s in zip(rows, reads)]
    assert lp.ahead_but_favourite(rows, blind) == ("Ashford", 0)
    assert "in 24 of 24 questions (8 by chance)" in lp.markdown("m", rows, reads)

    lm = tiny_model("llama")
    lm.tokenizer = tiny_tokenizer()
    scores = lp.answer_logprobs(lm, rows[:1])[0]
    prompt = lm.tokenizer(rows[0]["prompt"]).input_ids
    town = lm.tokenizer(" Kelmouth", add_special_tokens=False).input_ids
    logp = lm.model(torch.tensor([prompt + town])).logits[0].float().log_softmax(-1)
    want = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(town))
    assert set(scores) == {"Ashford", "Dunmoor", "Kelmouth", "Penhaven"}
    assert abs(scores["Kelmouth"] - want) < 1e-4 and len(set(scores.values())) == 4
