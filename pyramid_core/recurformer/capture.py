"""Calibration inputs and activations captured from the original model with forward hooks.

Hooks are registered on the decoder layers (their input, which we pass through the layer's own
input_layernorm: that is what the attention and a GroupRNN see) and on o_proj (its input is the
attention output [B, T, H * D] that the model's own SDPA attention produced). They are removed in
`finally`, so the model is unchanged whatever happens.
"""

from __future__ import annotations

import torch


def calibration_ids(lm, texts_or_ids, max_tokens: int = 1024, max_sequences: int | None = None,
                    min_tokens: int = 2) -> list[torch.Tensor]:
    """Token id sequences [1, T] (T <= max_tokens) on lm.device.

    texts_or_ids: a str (tokenised and cut into consecutive pieces of max_tokens), a list of str
    (each cut the same way), a LongTensor [T] or [B, T], or a list of id lists (each truncated).
    Pieces shorter than min_tokens are dropped; at most max_sequences are returned.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if isinstance(texts_or_ids, str):
        texts_or_ids = [texts_or_ids]
    pieces: list[list[int]] = []
    if isinstance(texts_or_ids, torch.Tensor):
        rows = texts_or_ids[None] if texts_or_ids.ndim == 1 else texts_or_ids
        pieces = [row[:max_tokens].tolist() for row in rows]
    else:
        for item in texts_or_ids:
            if isinstance(item, str):
                if lm.tokenizer is None:
                    raise ValueError("texts need a tokenizer: this model has none, pass token ids")
                ids = lm.tokenizer(item)["input_ids"]
                pieces += [ids[i:i + max_tokens] for i in range(0, len(ids), max_tokens)]
            else:
                pieces.append(list(item)[:max_tokens])
    pieces = [p for p in pieces if len(p) >= min_tokens][:max_sequences]
    if not pieces:
        raise ValueError(f"no calibration sequence has at least {min_tokens} tokens")
    return [torch.tensor([p], dtype=torch.long, device=lm.device) for p in pieces]


def capture(lm, input_ids: torch.Tensor, layers: list[int] | None = None, attn_out: bool = False):
    """Run the original model once; return ({layer: normed input [B, T, C]}, {layer: attn out [B, T, H*D]}).

    The second dict is empty unless attn_out. Tensors are detached, in the model's dtype.
    """
    blocks = lm.model.model.layers
    layers = list(range(len(blocks))) if layers is None else sorted(set(layers))
    inputs, outputs, handles = {}, {}, []

    def keep_input(idx):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            inputs[idx] = module.input_layernorm(hidden).detach()
        return hook

    def keep_attn(idx):
        def hook(module, args):
            outputs[idx] = args[0].detach()
        return hook

    try:
        for idx in layers:
            handles.append(blocks[idx].register_forward_pre_hook(keep_input(idx), with_kwargs=True))
            if attn_out:
                handles.append(blocks[idx].self_attn.o_proj.register_forward_pre_hook(keep_attn(idx)))
        with torch.no_grad():
            lm.model.model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, outputs
