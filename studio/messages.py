"""Messages in the page, where the user looks, instead of a corner pop-up over an "Error" badge on every
output (issue 18): a streaming handler's last output is its message box."""

from __future__ import annotations

import functools
import html

import gradio as gr

from .errors import user_errors

KINDS = {"error": "⛔", "notice": "ℹ️"}


def note_html(text: str, kind: str = "error") -> str:
    """One message as the page shows it (empty text: nothing)."""
    if not text:
        return ""
    return f"<div class='run-note run-{kind}'>{KINDS[kind]} {html.escape(text)}</div>"


def shown_in_page(before: int):
    """A streaming handler whose outputs end with the message box: a user error (user_errors' sentence)
    is written there, the `before` other outputs are left as they are, and the event still fails for
    API clients, with the pop-up hidden (the page already says it)."""
    def wrap(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            message = None
            try:
                with user_errors(fn.__name__):
                    yield from fn(*args, **kwargs)
            except gr.Error as err:
                message = err.message
            if message is not None:  # raised out here, the error chains nothing that holds the run's frames
                yield [gr.skip()] * before + [note_html(message)]
                raise gr.Error(message, visible=False, print_exception=False)
        return stream
    return wrap
