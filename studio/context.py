"""A run fitted to the model's context before anything runs: past it, a model loops on positions it
was never trained on (issue 18: a prompt plus max new tokens beyond the context ran on without a word)."""

from __future__ import annotations

from pyramid_core.models import LoadedModel
from pyramid_core.pipeline import encode_prompt


def fit_to_context(lm: LoadedModel, prompt: str, max_new_tokens: int, chat: bool = False) -> tuple[int, str]:
    """(max new tokens that fit, a notice when they were clamped); ValueError for a prompt that
    leaves no room for a single new token. chat: the prompt as the chat template wraps it."""
    prompt_tokens = encode_prompt(lm, prompt, chat).shape[1]
    room = lm.max_context - prompt_tokens
    if room < 1:
        raise ValueError(f"The prompt has {prompt_tokens} tokens, more than the model's context of "
                         f"{lm.max_context} allows with new tokens: shorten it.")
    if max_new_tokens > room:
        return room, (f"max new tokens clamped to {room}: the prompt has {prompt_tokens} tokens and the "
                      f"model's context is {lm.max_context}.")
    return max_new_tokens, ""
