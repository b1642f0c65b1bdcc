"""The public-deployment switch: on a public Space the model box takes the picker's models and hub ids
only, never a path on the server (a file-system probe), and the RecurFormer adapter knob only the shipped
adapter.

PYRAMID_PUBLIC=1 turns it on and PYRAMID_PUBLIC=0 off; unset, it is on when the app runs on a Hugging
Face Space (SPACE_ID is set there). Read at each request, so tests and operators can flip it.
"""

from __future__ import annotations

import os

from pyramid_core.models import ModelLoadError, check_hub_id, is_local_path

from .picker import PICKER_MODELS  # offered by name whatever the switch says

PUBLIC_ENV = "PYRAMID_PUBLIC"
OFF_VALUES = ("0", "false", "no", "off")


def public() -> bool:
    value = os.environ.get(PUBLIC_ENV)
    if value is None or not value.strip():
        return bool(os.environ.get("SPACE_ID"))
    return value.strip().lower() not in OFF_VALUES


def check_model(name: str) -> None:
    """In public mode: name is in PICKER_MODELS or a valid hub id, not a path; ModelLoadError otherwise."""
    if not public() or name in PICKER_MODELS:
        return
    if is_local_path(name):
        raise ModelLoadError("this public studio loads models from the hub only, not from the server's disk: "
                             f"pick one of {', '.join(PICKER_MODELS)} or give a hub id (owner/name)")
    check_hub_id(name)


def check_adapter(adapter: str | None) -> None:
    """In public mode only the shipped adapter (the knob left empty) is used."""
    if public() and (adapter or "").strip():
        raise ValueError("adapter: this public studio uses the shipped RecurFormer adapter only; "
                         "leave the adapter knob empty")
