"""The text a model reads for a prompt: the words as typed, or, for a model whose tokenizer has a chat
template (an instruct model), one user turn in that template followed by the assistant's opening, so
that the model answers the prompt instead of continuing it.

A templated text already holds every special token the template wants (Llama 3's opens with its BOS),
so it is tokenized without adding them again, as `apply_chat_template(tokenize=True)` does itself;
adding them would give such a model two BOS tokens. Raw text gets the tokenizer's special tokens.
"""

from __future__ import annotations

import torch


def uses_chat(tokenizer, chat: bool) -> bool:
    """Whether the prompt goes through the chat template: asked for, and the tokenizer has one."""
    return bool(chat) and getattr(tokenizer, "chat_template", None) is not None


def model_text(tokenizer, prompt: str, chat: bool) -> str:
    """The exact text the model reads for `prompt` (what the app shows as the prompt the model sees)."""
    if not uses_chat(tokenizer, chat):
        return prompt
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)


def prompt_ids(tokenizer, prompt: str, chat: bool) -> torch.Tensor:
    """Token ids [1, T] of model_text(...), special tokens added only to raw text."""
    text = model_text(tokenizer, prompt, chat)
    return tokenizer(text, add_special_tokens=not uses_chat(tokenizer, chat), return_tensors="pt").input_ids
