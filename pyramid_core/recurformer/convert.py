"""Attention transfer: train each chosen group's GroupRNN to reproduce that group's attention output.

Recipe (docs/recurformer.md, "Training", stage A; LoLCATs' layer-local MSE, Zhang et al. 2024):

- The model is frozen: it runs once per calibration sequence under no_grad, and hooks capture, for
  every chosen layer, its input_layernorm output x [1, T, C] and its attention output before o_proj
  [1, T, H * D] (the model's own SDPA attention). Every GroupRNN is then trained on those captured
  inputs: teacher forcing per layer, so an error in one layer never shifts another layer's inputs.
- Loss per group: MSE between the GroupRNN output and the group's slots of the attention output
  (loss="attn"), or between both after the group's columns of o_proj (loss="o_proj": the error as
  the residual stream sees it, LoLCATs' variant; heads that o_proj barely reads then matter less).
- Before training, each output channel's scale is fitted by least squares to the target (the RNN's
  output is RMS-normalised, so its scale is arbitrary at the copy); "initial loss" is measured after
  this fit, so the reported improvement is what training itself adds.
- All GroupRNN parameters train (copied q/k/v included) with AdamW and a cosine schedule down to
  lr / 10; gradients are clipped to norm 1. Nothing here is random: steps cycle through the sequences.

Losses are reported on the calibration sequences (there is no held-out split in stage A).

convert() then optionally runs stage B, end-to-end distillation of the whole model's next-token
distribution (distill.py), on the same sequences; its record is stats["distill"]. With an init
adapter, stage A starts from (or, with steps=0, keeps) an earlier adapter's trained weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import torch

from .adapter import Adapter, check_adapter, load_adapter, rnn_config
from .capture import calibration_ids, capture
from .distill import check_distill_knobs, distill
from .rnn import GroupRNN, RNNConfig

log = logging.getLogger(__name__)

LOSSES = ("attn", "o_proj")
STAGE_A_STATS = ("steps", "lr", "loss", "sequences", "tokens", "groups")  # stats keys stage A writes


def convert(lm, groups: list[list[int]], calibration_ids_or_text, steps: int = 200, lr: float = 1e-3,
            loss: str = "attn", init_decay: float = 0.95, chunk: int = 64, max_tokens: int = 1024,
            max_sequences: int | None = 8, progress: bool = True, distill_steps: int = 0,
            distill_lr: float = 1e-4, init_adapter: Adapter | str | Path | None = None,
            taps: int | None = None) -> Adapter:
    """Train a GroupRNN for each [layer, kv_group] in groups; return the Adapter (float32 weights).

    calibration_ids_or_text: anything capture.calibration_ids takes (text, texts or token ids).
    Stage A (attention transfer, `steps` steps at `lr`) then, when distill_steps > 0, stage B
    (end-to-end distillation, distill.py, on the same sequences). init_adapter (an Adapter or its
    directory): start from its GroupRNNs (same groups) instead of copies of the attention; stage A
    then continues from them, and steps=0 skips it, keeping the init adapter's stage A record in
    stats. stats["init_adapter"] says where the weights came from. taps (RNNConfig.taps; default 1, or
    the init adapter's): an init adapter without taps gains them, their weights starting at 0.
    Autograd is switched on here whatever the caller's grad or inference mode.
    """
    # decayed states underflow into denormals, which CPUs compute ~100x slower: flush them to zero
    flush = torch.set_flush_denormal(True)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            return _convert(lm, groups, calibration_ids_or_text, steps, lr, loss, init_decay, chunk, max_tokens,
                            max_sequences, progress, distill_steps, distill_lr, init_adapter, taps)
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _convert(lm, groups, calibration_ids_or_text, steps, lr, loss, init_decay, chunk, max_tokens,
             max_sequences, progress, distill_steps, distill_lr, init_adapter, taps) -> Adapter:
    check_knobs(lm, groups, steps, lr, loss)
    check_distill_knobs(distill_steps, distill_lr)
    groups = sorted([int(l), int(g)] for l, g in groups)
    source = None
    if init_adapter is not None:
        if not isinstance(init_adapter, Adapter):
            source, init_adapter = str(init_adapter), load_adapter(init_adapter)
        check_init(init_adapter, lm, groups)
    seqs = calibration_ids(lm, calibration_ids_or_text, max_tokens, max_sequences)
    if init_adapter is None:
        cfg, base = rnn_config(lm, init_decay=init_decay, chunk=chunk, taps=taps or 1), lm.model.model
        rnns = {(l, g): GroupRNN.from_attention(base.layers[l].self_attn, base.rotary_emb, g, cfg).to(lm.device)
                for l, g in groups}
    else:  # its RNNConfig too: init_decay and chunk are not used
        cfg = RNNConfig(**init_adapter.config)
        rnns = {(l, g): rnn.to(lm.device) for l, by_group in init_adapter.modules().items()
                for g, rnn in by_group.items()}
        if taps and taps != cfg.taps:
            cfg = replace(cfg, taps=taps)
            rnns = {key: rnn.with_taps(taps) for key, rnn in rnns.items()}
    if init_adapter is None or steps > 0:
        stats = attention_transfer(lm, rnns, seqs, cfg, steps, lr, loss, progress, fit=init_adapter is None)
    else:  # stage A's weights are the init adapter's: so is the record of how they were trained
        stats = {k: v for k, v in init_adapter.stats.items() if k in STAGE_A_STATS}
    if init_adapter is not None:
        stats["init_adapter"] = {"source": source or f"an Adapter of {init_adapter.base_model}",
                                 "stage_a_steps_here": steps, "stats": init_adapter.stats}
    if distill_steps > 0:
        modules: dict = {}
        for (l, g), rnn in rnns.items():
            modules.setdefault(l, {})[g] = rnn
        stats["distill"] = distill(lm, modules, seqs, distill_steps, distill_lr, progress)
    state = {f"{l}.{g}.{k}": v.detach().cpu() for (l, g), rnn in rnns.items() for k, v in rnn.state_dict().items()}
    return Adapter(base_model=lm.name, groups=groups, config=cfg.to_dict(), state_dict=state, stats=stats)


def attention_transfer(lm, rnns: dict, seqs, cfg, steps: int, lr: float, loss: str, progress: bool,
                       fit: bool = True) -> dict:
    """Stage A on rnns {(layer, group): GroupRNN} in place; fit=True first fits their output scales.
    Returns the stage's stats (steps, lr, loss, sequences, tokens, per-group initial and final loss)."""
    layers = sorted({l for l, _ in rnns})
    data = []
    for ids in seqs:
        inputs, outputs = capture(lm, ids, layers, attn_out=True)
        pos = torch.arange(ids.shape[1], device=ids.device)[None]
        data.append((pos, {l: inputs[l].float() for l in layers}, {l: outputs[l].float() for l in layers}))
    base = lm.model.model
    w_o = {(l, g): base.layers[l].self_attn.o_proj.weight[:, slots(cfg, g)].detach().float()
           for l, g in rnns} if loss == "o_proj" else {}
    if fit:
        for key, rnn in rnns.items():
            fit_output_scale(rnn, data, *key)
    initial = evaluate(rnns, data, w_o, cfg)

    params = [p for rnn in rnns.values() for p in rnn.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(steps))
    for step in progress_bar(range(steps), progress, "attention transfer"):
        pos, xs, ys = data[step % len(data)]
        total = sum(group_loss(rnn, xs[l], pos, ys[l][..., slots(cfg, g)], w_o.get((l, g)))
                    for (l, g), rnn in rnns.items())
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    final = evaluate(rnns, data, w_o, cfg)
    log.info("attention transfer: mean loss %.4g -> %.4g over %d groups",
             sum(initial.values()) / len(rnns), sum(final.values()) / len(rnns), len(rnns))
    return {"steps": steps, "lr": lr, "loss": loss, "sequences": len(seqs),
            "tokens": sum(int(ids.shape[1]) for ids in seqs),
            "groups": {f"{l}:{g}": {"initial_loss": initial[(l, g)], "final_loss": final[(l, g)]}
                       for l, g in sorted(rnns)}}


def cosine(steps: int):
    """The learning-rate factor at step s: from 1 down to 0.1 over `steps` steps along a cosine."""
    return lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / max(steps, 1)))


def check_init(init: Adapter, lm, groups: list[list[int]]) -> None:
    """The init adapter must fit lm and replace exactly `groups`."""
    check_adapter(init, lm)
    if sorted(init.groups) != groups:
        raise ValueError(f"init adapter replaces groups {sorted(init.groups)}, not the requested {groups}: "
                         f"pass the same groups (--groups)")


def check_knobs(lm, groups, steps: int, lr: float, loss: str) -> None:
    cfg = lm.config
    L, G = cfg.num_hidden_layers, cfg.num_key_value_heads
    if not groups:
        raise ValueError("groups is empty: nothing to convert")
    bad = [p for p in groups if len(p) != 2 or not (0 <= p[0] < L and 0 <= p[1] < G)]
    if bad:
        raise ValueError(f"groups {bad} are outside this model's {L} layers x {G} KV groups")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not 0.0 < lr <= 1.0:
        raise ValueError(f"lr must be in (0, 1], got {lr}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def slots(cfg, group: int) -> slice:
    """The group's columns in o_proj's input (its heads' outputs): [group * G * D, (group + 1) * G * D)."""
    width = cfg.heads * cfg.head_dim
    return slice(group * width, (group + 1) * width)


def group_loss(rnn: GroupRNN, x, pos, target, w_o=None) -> torch.Tensor:
    """MSE of one group on one sequence: x [1, T, C], target [1, T, G * D]; w_o [C_out, G * D] or None."""
    err = rnn(x, pos)[0] - target
    if w_o is not None:
        err = err @ w_o.T
    return err.pow(2).mean()


@torch.no_grad()
def fit_output_scale(rnn: GroupRNN, data, layer: int, group: int) -> None:
    """Least-squares per-channel out_weight (skip = 0) against the targets on all sequences."""
    rnn.out_weight.fill_(1.0)
    rnn.skip.zero_()
    G, D = rnn.cfg.heads, rnn.cfg.head_dim
    num = torch.zeros(G * D, device=rnn.out_weight.device)
    den = torch.zeros_like(num)
    for pos, xs, ys in data:
        unit = rnn(xs[layer], pos)[0].reshape(-1, G * D)  # RMS-normalised output, weight 1
        target = ys[layer][..., group * G * D:(group + 1) * G * D].reshape(-1, G * D)
        num += (unit * target).sum(0)
        den += unit.pow(2).sum(0)
    rnn.out_weight.copy_((num / den.clamp(min=1e-12)).view(G, D))


@torch.no_grad()
def evaluate(rnns: dict, data, w_o: dict, cfg) -> dict:
    """Mean loss per (layer, group) over all sequences."""
    return {(l, g): sum(float(group_loss(rnn, xs[l], pos, ys[l][..., slots(cfg, g)], w_o.get((l, g))))
                        for pos, xs, ys in data) / len(data)
            for (l, g), rnn in rnns.items()}


def progress_bar(iterable, enabled: bool, desc: str):
    """tqdm when it is installed and wanted; otherwise log every tenth of the way."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(iterable, desc=desc)
        except ImportError:
            log.info("tqdm is not installed: progress goes to the log")
    return _logged(iterable, desc)


def _logged(iterable, desc: str):
    items = list(iterable)
    every = max(1, len(items) // 10)
    for i, item in enumerate(items):
        if i % every == 0:
            log.info("%s: step %d/%d", desc, i, len(items))
        yield item
