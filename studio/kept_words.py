"""The kept-words view of a finished run: two chosen modes side by side over the text's own tokens
(visual/kept_words.py draws it), and the token strings the run's state keeps for it."""

from __future__ import annotations

import visual
from pyramid_core.models import LoadedModel
from pyramid_core.pipeline import encode_prompt

ALL_LAYERS = "every layer (share holding)"
DEFAULT_PAIR = ("pyramid", "streaming")  # the contrast the view is for: a scored cache next to a window
NOTHING_YET = "<p>Generate to see which words each mode kept.</p>"


def layer_choices(config) -> list[str]:
    return [ALL_LAYERS] + [f"layer {i}" for i in range(config.num_hidden_layers)]


def token_texts(lm: LoadedModel, prompt: str, runs, chat: bool = False) -> dict[str, list[str]]:
    """{mode: the text of every position}: the prompt's tokens (in the chat template with `chat`), then
    the mode's generated ones (each decoded alone, so the view's tokens are the model's own cuts of the text)."""
    prompt_ids = encode_prompt(lm, prompt, chat)[0].tolist()
    generated = {m: [r.token_ids[0] for r in run] for m, run in runs.items()}
    # each distinct token decoded once, all in one batch: one decode call per position took ~40 ms for a
    # 3000-token prompt on a 2-core CPU, most of the final update's added time on a GPU
    distinct = list(dict.fromkeys(prompt_ids + [i for ids in generated.values() for i in ids]))
    text = dict(zip(distinct, lm.tokenizer.batch_decode([[i] for i in distinct])))
    prompt_text = [text[i] for i in prompt_ids]
    return {m: prompt_text + [text[i] for i in ids] for m, ids in generated.items()}


def kept_words_view(state: dict | None, left: str, right: str, layer: str) -> str:
    """The two modes' panels from gr.State's records and token texts."""
    runs = (state or {}).get("runs")
    if not runs:
        return NOTHING_YET
    modes = list(dict.fromkeys([left, right]))  # the same mode twice shows once
    chosen = None if layer in (None, ALL_LAYERS) else int(str(layer).split()[-1])
    return visual.kept_words_pair(runs, state.get("tokens", {}), modes, chosen)
