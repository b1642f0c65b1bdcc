"""studio/heap.py: long-lived objects leave the collector's full passes; an evicted model still goes."""
import gc
import shutil
import weakref

from studio import heap, model_cache


def tracked(obj) -> bool:
    """Whether a full collection would walk obj (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_a_loaded_model_is_frozen_out_of_full_collections(checkpoint, monkeypatch):
    monkeypatch.setattr(model_cache, "_models", type(model_cache._models)())
    lm = model_cache.get_model(checkpoint)
    assert gc.get_freeze_count() > 0
    assert not tracked(lm.model)
    fresh = [lm]  # made after the freeze: collections still see it
    assert tracked(fresh)


def test_an_evicted_model_in_a_cycle_is_still_freed(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(model_cache, "_models", type(model_cache._models)())
    monkeypatch.setattr(model_cache, "MAX_MODELS", 1)
    first = model_cache.get_model(checkpoint)
    first.model.cycle = [first.model]  # only the collector can free this once the cache lets go
    gone = weakref.ref(first.model)
    del first
    model_cache.get_model(str(shutil.copytree(checkpoint, tmp_path / "other")))  # evicts the first
    assert gone() is None


def test_settle_thaws_what_it_froze_before_it_collects():
    holder = type("Holder", (), {})()
    holder.me = holder
    watch = weakref.ref(holder)
    heap.settle()  # the cycle is alive: frozen
    assert not tracked(holder)
    del holder
    heap.settle()
    assert watch() is None


def test_a_requests_worth_of_new_containers_sets_off_no_young_collection():
    """Python's default collects the young generation every 700 net new containers, and each pass walks a
    run's records again; after settle() a request's worth (thousands of records' lists) sets off none."""
    threshold = gc.get_threshold()
    collections = []
    callback = lambda phase, info: phase == "start" and collections.append(info["generation"])  # noqa: E731
    try:
        heap.settle()
        gc.callbacks.append(callback)
        kept = [[i] for i in range(5_000)]  # alive, so each stays a young container
        assert len(kept) == 5_000 and collections == []
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*threshold)
    gc.set_threshold(700, *threshold[1:])
    try:
        gc.callbacks.append(callback)
        kept = [[i] for i in range(5_000)]
        assert collections  # the default would have collected: the test can tell the two apart
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*threshold)
