"""Call counters for the tests: which of a module's functions ran, and how often."""


def count_calls(monkeypatch, module, *names: str) -> dict:
    """{name: 0} for each of the module's functions `names`, counted up as they are called (the module's
    own attribute is replaced, so callers that look it up through the module are counted)."""
    calls = dict.fromkeys(names, 0)

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name in names:
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    return calls
