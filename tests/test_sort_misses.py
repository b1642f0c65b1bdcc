"""training/sort_misses.py: the classes a reading miss falls into, from what was asked and what was answered."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
import sort_misses as sm  # noqa: E402

DOC = "Nobody but Hugo Varga drives the red carriage. Julia lives in the town where Thenton stands."


def test_each_class():
    assert sm.miss_class("Hugo Varga", "Nobody", DOC) == sm.EXCLUSIVE
    assert sm.miss_class("Thenton", "the town where Thenton", DOC).startswith("the answer with words around it")
    assert sm.miss_class("in the loft above the chandlery", "in the loft above", DOC) == "part of the answer"
    assert sm.miss_class("Womwen Rook", "Womwen Rark", DOC).startswith("a near copy")
    assert sm.miss_class("Hugo Varga", "Julia", DOC).startswith("another span of the document")
    assert sm.miss_class("Pepper", "Torto", DOC) == "words not in the document"


def test_only_wrong_results_of_the_asked_kinds_are_sorted():
    results = [{"kind": "single", "answer": "Hugo Varga", "given": " Nobody\n", "right": False},
               {"kind": "single", "answer": "Thenton", "given": "Thenton", "right": True},
               {"kind": "multi", "answer": "Gus", "given": "Julia", "right": False}]
    tasks = [{"prompt": DOC + "\n\nQuestion: Who owns the red carriage?\nAnswer:"}] * 3
    misses = sm.sorted_misses(results, tasks, ("single",))
    assert list(misses) == ["single"]
    assert dict(misses["single"]) == {sm.EXCLUSIVE: [("Hugo Varga", "Nobody")]}
    table = sm.markdown(misses)
    assert "## single: 1 misses" in table and "'Hugo Varga' -> 'Nobody'" in table


def test_stories_are_counted_by_what_their_question_asks():
    asked = ["Who milked the goats?", "Which person drew the maps?", "How many maps did Hugo draw?",
             "What number of goats did Ada milk?", "Where were the maps drawn?"]
    tasks = [{"prompt": f"{DOC}\n\nQuestion: {q}\nAnswer:"} for q in asked] + [{"prompt": DOC}]
    results = [{"kind": "story", "right": right} for right in (True, False, True, True, False)] + \
        [{"kind": "single", "right": False}]
    assert [sm.story_asked(t["prompt"]) for t in tasks[:5]] == ["who", "who", "count", "count", "where"]
    table = sm.story_asks_table(results, tasks)
    assert "| who | 1 | 2 | 50.0% |" in table and "| count | 2 | 2 | 100.0% |" in table
    assert "| where | 0 | 1 | 0.0% |" in table and "single" not in table


def test_the_length_table_counts_each_kind_at_each_length():
    results = [{"kind": "story", "length": 512, "right": True}, {"kind": "story", "length": 512, "right": False},
               {"kind": "story", "length": 4096, "right": False}, {"kind": "single", "length": 4096, "right": True}]
    lines = sm.length_table(results).splitlines()
    assert lines[2] == "| kind | 512 | 4096 |"
    assert "| single | - | 1/1 |" in lines and "| story | 1/2 | 0/1 |" in lines
