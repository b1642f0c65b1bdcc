"""The reading-task generator (training/reading_tasks.py): answers really in the documents, the held-out
split disjoint from training, seeds that reproduce, lengths near their targets, the answer format."""

import re
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from pyramid_core.resources import asset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training"))
import reading_tasks as rt  # noqa: E402
from train_embedded import encode_task  # noqa: E402

TOKENIZER = Tokenizer.from_file(str(asset("embedded") / "tokenizer.json"))


def texts(start: int, stop: int) -> list[str]:
    """Natural documents cut from the held-out prose (different ranges for different 'splits')."""
    paras = asset("heldout.txt").read_text().split("\n\n")
    return ["\n\n".join(paras[i:i + 20]) for i in range(start, stop, 20)]


@pytest.fixture(scope="module")
def maker():
    return rt.TaskMaker(texts(0, 400), TOKENIZER, "train", seed=3)


@pytest.mark.parametrize("kind", rt.TaskMaker.KINDS)
def test_the_answer_is_in_the_document(maker, kind):
    for _ in range(25):
        task = maker.make(kind, 400)
        if task.kind == "two" and " and " in task.answer and task.answer not in task.document:
            parts = task.answer.split(" and ")  # both values: each stated somewhere in the document
        else:
            parts = [task.answer]
        for part in parts:
            assert part and part in task.document, (kind, task.question, task.answer)


def test_the_asked_fact_sits_at_the_requested_depth(maker):
    """At the sentence boundary nearest the depth: within 0.12 of it unless a paragraph is one long
    'sentence' (verse without full stops), which happens in a few tasks in a hundred at most."""
    misses = 0
    for depth in (0.0, 0.5, 1.0):
        for _ in range(30):
            misses += abs(maker.single(1500, depth).depths[0] - depth) >= 0.12
    assert misses <= 3, misses


def test_lengths_follow_the_target(maker):
    for target in (300, 1000, 3000):
        n = [maker.ntokens(maker.single(target).document) for _ in range(8)]
        assert all(0.8 * target <= x <= 1.05 * target for x in n), (target, n)


def test_answer_format_and_prompt_prefix(maker):
    task = maker.make("multi", 300)
    assert task.text == f"{task.document}\n\nQuestion: {task.question}\nAnswer: {task.answer}\n"
    assert task.prompt.endswith("\nAnswer:") and task.text.startswith(task.prompt)
    ids, mask = encode_task(TOKENIZER, task, 0, 1)
    answer = TOKENIZER.decode([i for i, m in zip(ids, mask) if m])
    assert answer == f" {task.answer}\n"


def test_seeds_reproduce_and_differ():
    a = [rt.TaskMaker(texts(0, 800), TOKENIZER, "train", seed=7).make(k, 300).text for k in rt.TaskMaker.KINDS]
    b = [rt.TaskMaker(texts(0, 800), TOKENIZER, "train", seed=7).make(k, 300).text for k in rt.TaskMaker.KINDS]
    c = [rt.TaskMaker(texts(0, 800), TOKENIZER, "train", seed=8).make(k, 300).text for k in rt.TaskMaker.KINDS]
    assert a == b
    assert a != c


def test_heldout_pools_are_disjoint_from_training():
    import random

    train, held = rt.Pools("train", random.Random(0)), rt.Pools("heldout", random.Random(0))
    for name in ("first", "surnames", "places", "objects", "acts"):
        tr, he = set(getattr(train, name)), set(getattr(held, name))
        assert tr and he and not tr & he, name
    for r_train, r_held in zip(train.relations, held.relations):
        for part in ("facts", "questions", "pair"):
            tr, he = set(getattr(r_train, part)), set(getattr(r_held, part))
            assert not tr & he, (r_train.name, part)
            assert he or not tr, (r_train.name, part)


def test_heldout_tasks_use_only_heldout_names_and_phrasings():
    import random

    held = rt.TaskMaker(texts(400, 667), TOKENIZER, "heldout", seed=1)
    train_pools = rt.Pools("train", random.Random(0))
    train_questions = {q for r in train_pools.relations for q in r.questions}
    for _ in range(40):
        task = held.make("single", 300)
        names = set(re.findall(r"\b[A-Z][a-z]+\b", task.question))
        assert not names & set(train_pools.first) - set(held.pools.first), task.question
        # no training question template produces this question
        assert not any(_matches(q, task.question) for q in train_questions), task.question


def _matches(template: str, text: str) -> bool:
    pattern = re.escape(template)
    for slot in ("s", "S", "a", "v"):
        pattern = pattern.replace(re.escape("{" + slot + "}"), ".+")
    return re.fullmatch(pattern, text) is not None


def test_number_words():
    assert [rt.number_words(n) for n in (0, 7, 13, 20, 42, 99)] == [
        "zero", "seven", "thirteen", "twenty", "forty-two", "ninety-nine"]


def test_quotes_survive_irregular_spacing():
    """Runs of spaces and tabs (man pages, verse) once made a quotation draw from an empty range."""
    odd = [t.replace(" ", "\t") if i % 2 else t.replace(". ", ".  ") for i, t in enumerate(texts(0, 400))]
    maker = rt.TaskMaker(odd, TOKENIZER, "train", seed=11)
    for _ in range(60):
        task = maker.quote(300)  # (falls back to a single fact where no sentence has ten spaced words)
        assert task.answer in task.document and "\n" not in task.answer


def test_loss_weights_answers_task_documents_and_natural_rows():
    """Answers get answer_weight, the rest of the task rows doc_weight, natural rows 1 (train_embedded)."""
    import torch
    from train_embedded import kind_weights, token_weights

    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 4] = mask[1, 2] = True  # targets 3 and 1 of the two task rows are answer tokens
    w = token_weights(mask, n_task=2, answer_weight=4.0, doc_weight=0.1)
    assert w.shape == (3, 5)
    assert w[0, 3] == 4.0 and w[1, 1] == 4.0
    assert torch.allclose(w[0, [0, 1, 2, 4]], torch.full((4,), 0.1))
    assert torch.equal(w[2], torch.ones(5))
    assert kind_weights("single=0.5,story=0.5") == {"single": 0.5, "story": 0.5}
    with pytest.raises(Exception, match="unknown task kinds"):
        kind_weights("riddle=1")
