"""The model picker's list: the embedded model and hub models small enough for a Space GPU, each with a
label saying its size and what it is. The model box also takes any other hub id or a local directory
(deployment.py says when it does not)."""

from __future__ import annotations

from pyramid_core.models import EMBEDDED_NAME

# id -> label, in the picker's order; the instruct models bring a chat template (prompting.py)
PICKER = {
    EMBEDDED_NAME: "embedded: 28M Llama trained here to read its context (shipped, no chat template)",
    "HuggingFaceTB/SmolLM2-360M-Instruct": "SmolLM2-360M-Instruct: 0.36B Llama, chat",
    "Qwen/Qwen2.5-0.5B-Instruct": "Qwen2.5-0.5B-Instruct: 0.5B Qwen2, chat",
    "Qwen/Qwen3-0.6B": "Qwen3-0.6B: 0.6B Qwen3, chat (thinks before answering)",
    "meta-llama/Llama-3.2-1B-Instruct": "Llama-3.2-1B-Instruct: 1.2B Llama, chat (gated: needs an HF token)",
    "Qwen/Qwen2.5-1.5B-Instruct": "Qwen2.5-1.5B-Instruct: 1.5B Qwen2, chat",
}
PICKER_MODELS = tuple(PICKER)


def picker_choices() -> list[tuple[str, str]]:
    """(label, id) pairs, as a dropdown takes them."""
    return [(label, name) for name, label in PICKER.items()]
