"""A quick look at the hub before loading a hub id: without it, an unknown id on a machine that cannot
reach the hub took ~23 s of from_pretrained's retries to fail (issue 18). The real loading path stays
from_pretrained; this only answers sooner when the answer is no."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from pyramid_core.models import EMBEDDED_NAME, ModelLoadError

PROBE_TIMEOUT_S = 2.0  # the whole refusal must come within 3 s


def probe_hub(name: str) -> None:
    """Raise ModelLoadError when `name` is a hub id that the hub says is not there, or when the hub
    cannot be reached and the model is not in the local cache. Local directories, the embedded model,
    cached models and offline mode (HF_HUB_OFFLINE: from_pretrained then fails fast itself) pass."""
    if not _is_hub_id(name) or _offline() or _cached(name):
        return
    url = f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co').rstrip('/')}/api/models/{name}"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise ModelLoadError(f"there is no model {name!r} on the hub: check the id (owner/name)") from err
        # 401/403: gated or private; from_pretrained says whether a token gets it
    except (urllib.error.URLError, OSError) as err:
        raise ModelLoadError(f"cannot reach the hub to fetch {name!r} (no network?): pick the embedded "
                             "model or a local directory") from err


def _is_hub_id(name: str) -> bool:
    name = (name or "").strip()
    return (name not in ("", EMBEDDED_NAME) and name.count("/") == 1 and not name.startswith((".", "/", "~"))
            and not Path(name).exists())


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)
