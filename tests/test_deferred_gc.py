"""Full collections wait while a generation runs (pyramid_core/deferred_gc.py), and come back after it,
however it ends: run out, closed early, or overlapping another."""

import gc
import threading

import pytest

from pyramid_core import generate
from pyramid_core.deferred_gc import NEVER, full_collections_deferred
from tests.test_graphs import left_padded
from tests.tiny_models import tiny_model


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    gc.set_threshold(500, 7, 9)
    yield (500, 7, 9)
    gc.set_threshold(*saved)


def test_a_generation_defers_full_collections_and_puts_the_threshold_back(thresholds):
    lm = tiny_model("llama")
    ids, mask = left_padded((5, 7))
    seen = [gc.get_threshold() for _ in generate(lm, ids, mask, max_new_tokens=3)]
    assert seen == [(500, 7, NEVER)] * 3
    assert gc.get_threshold() == thresholds


def test_a_generation_closed_early_puts_the_threshold_back(thresholds):
    lm = tiny_model("llama")
    ids, mask = left_padded((6,))
    records = generate(lm, ids, mask, max_new_tokens=10)
    next(records)
    assert gc.get_threshold()[2] == NEVER
    records.close()
    assert gc.get_threshold() == thresholds


def test_overlapping_generations_restore_only_when_the_last_ends(thresholds):
    """Two threads' generations overlap: the first to end leaves the deferral on for the other."""
    inside, release = threading.Event(), threading.Event()

    def other():
        with full_collections_deferred():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(10)
    with full_collections_deferred():
        assert gc.get_threshold()[2] == NEVER
    assert gc.get_threshold()[2] == NEVER  # the other still runs
    release.set()
    thread.join(10)
    assert gc.get_threshold() == thresholds


def test_an_explicit_collection_still_runs(thresholds):
    class Cycle:
        pass

    with full_collections_deferred():
        a = Cycle()
        a.me = a
        del a
        assert gc.collect() >= 1
