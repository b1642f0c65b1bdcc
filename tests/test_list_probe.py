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
