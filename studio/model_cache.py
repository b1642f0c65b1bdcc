"""Loaded models, shared read-only by every session, keyed by (name, dtype, device); the oldest goes
first when more than MAX_MODELS are held."""

from __future__ import annotations

import threading
from collections import OrderedDict

from pyramid_core.models import EMBEDDED_NAME, LoadedModel, default_device, load_config, load_model

from . import deployment, heap
from .hub import probe_hub
from .torch_thread import on_torch_thread

MAX_MODELS = 2

_models: OrderedDict = OrderedDict()
_lock = threading.Lock()


def model_key(name: str) -> tuple:
    """(name, dtype, device); an empty name is the embedded model. A name the deployment refuses
    (deployment.check_model) raises here, before anything is read."""
    if name is not None and not isinstance(name, str):
        raise ValueError(f"The model box takes a name, got {type(name).__name__}.")
    name = (name or "").strip() or EMBEDDED_NAME
    deployment.check_model(name)
    return (name, "auto", default_device())


def get_model(name: str) -> LoadedModel:
    key = model_key(name)
    with _lock:
        if key not in _models:
            probe_hub(key[0])
            _models[key] = on_torch_thread(load_model, key[0], device=key[2], dtype=key[1])
            while len(_models) > MAX_MODELS:
                _models.popitem(last=False)
            heap.settle()
        _models.move_to_end(key)
        return _models[key]


def model_config(name: str):
    """A loaded model's config, or the config file alone for a model not loaded yet."""
    key = model_key(name)
    with _lock:
        loaded = _models.get(key)
    if loaded is None:
        probe_hub(key[0])
    return loaded.config if loaded is not None else load_config(key[0])
