"""Optional GPU packages (Triton, flash-linear-attention): whether one imports, asked once."""

from __future__ import annotations

import functools
import importlib
import logging

log = logging.getLogger(__name__)


@functools.cache
def importable(module: str, fallback: str) -> bool:
    """True when `module` imports; otherwise say once which `fallback` serves instead."""
    try:
        importlib.import_module(module)
        return True
    except Exception as err:  # not installed, or installed without a working backend
        log.warning("%s is not usable (%s): %s", module, err, fallback)
        return False
