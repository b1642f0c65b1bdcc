"""End-to-end distillation (stage B): train the GroupRNNs so the whole model's next-token distribution
matches the unmodified model's.

Recipe (docs/recurformer.md, "Training", stage B; the KL term of Mamba-in-the-Llama, Wang et al. 2024, and
LoLCATs' second stage, Zhang et al. 2024, without their LoRA on the retained attention):

- Student: the engine's prefill with the replaced groups in place, as a differentiable loop returning
  logits at every position (`student_logits`). It runs the engine's own layer forward
  (layers.layer_forward, with GroupRNN.forward's chunked scan in the replaced groups), so its
  last-position logits are the engine's prefill logits (tests/test_distill.py checks it).
- Teacher: the same loop with no replaced groups, i.e. the unmodified model, under no_grad. It is
  recomputed at every step: caching full log-probs would take T * V * 4 bytes per sequence (32 MB at
  1024 tokens and a vocabulary of 8192; 12 GB for 384 sequences), and the teacher's forward costs a
  fraction of the student's forward and backward.
- Loss: KL(teacher || student) summed over the vocabulary, averaged over every position of a sequence.
- Only the GroupRNN parameters train (backward(inputs=...) leaves the model's weights without
  gradients and the model untouched); AdamW with a cosine schedule down to lr / 10, gradients clipped
  to norm 1, one calibration sequence per step in order (nothing random), as in stage A.

Layer-local attention transfer (stage A) feeds every layer the teacher's inputs, so it cannot see an
error that grows as it passes through later layers; this stage trains on the model's real output.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel

from ..attention import ATTENTION_BACKENDS
from ..layers import EagerStages, layer_forward, model_parts, rms_norm, rope_tables
from ..recurrent_groups import layer_heads

log = logging.getLogger(__name__)

KL_SEQUENCES = 32  # calibration sequences the KL before and after distillation is measured on, at most


@sdpa_kernel(ATTENTION_BACKENDS)
def student_logits(lm, modules: dict, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] (float32) at every position of input_ids [B, T] (no padding).

    modules: {layer: {kv_group: module}} run in place of those groups, as lm.recurrent holds them;
    {} gives the unmodified model. Differentiable in the modules' parameters.
    """
    parts = model_parts(lm)
    heads = layer_heads(parts.num_layers, parts.num_heads, parts.num_kv_heads, _matching_dtype(modules, lm.dtype),
                        input_ids.device, stack=False)
    stages = EagerStages(parts, heads)
    pos = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    h = parts.embed(input_ids)
    rope = rope_tables(parts.rotary, h, pos)
    for idx in range(parts.num_layers):  # no cache: each layer attends over its own keys, causally
        h, _ = layer_forward(stages, idx, h, pos, rope)
    return parts.lm_head(rms_norm(parts.norm, h)).float()


class _Cast(nn.Module):
    """Runs a float32 GroupRNN on a lower-precision model's activations and returns them in its dtype."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, positions, state=None):
        y, state = self.rnn(x.float(), positions, state)
        return y.to(x.dtype), state


def _matching_dtype(modules: dict, dtype: torch.dtype) -> dict:
    def fit(m):
        return m if next(m.parameters()).dtype == dtype else _Cast(m)
    return {layer: {g: fit(m) for g, m in by_group.items()} for layer, by_group in modules.items()}


def kl_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per position, mean over positions. Logits [B, T, V]."""
    V = student.shape[-1]
    return F.kl_div(F.log_softmax(student.reshape(-1, V), -1), F.log_softmax(teacher.reshape(-1, V), -1),
                    log_target=True, reduction="batchmean")


@torch.no_grad()
def teacher_logits(lm, input_ids: torch.Tensor) -> torch.Tensor:
    return student_logits(lm, {}, input_ids)


@torch.no_grad()
def mean_kl(lm, modules: dict, seqs: list[torch.Tensor]) -> float:
    """Mean over seqs of the per-position KL(teacher || student)."""
    return sum(float(kl_loss(student_logits(lm, modules, ids), teacher_logits(lm, ids))) for ids in seqs) / len(seqs)


def distill(lm, modules: dict, seqs: list[torch.Tensor], steps: int, lr: float, progress: bool = True) -> dict:
    """Train modules ({layer: {group: GroupRNN}}, float32, in place) for `steps` steps on seqs [1, T] each.

    Returns the stage's stats: steps, lr, sequences, tokens, KL before and after (on the first
    KL_SEQUENCES sequences), the training time in seconds and the device it ran on.
    """
    from .convert import cosine, progress_bar  # convert imports this module

    check_distill_knobs(steps, lr)
    params = [p for by_group in modules.values() for m in by_group.values() for p in m.parameters()]
    held = seqs[:KL_SEQUENCES]
    before = mean_kl(lm, modules, held)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(steps))
    start = time.perf_counter()
    for step in progress_bar(range(steps), progress, "distillation"):
        ids = seqs[step % len(seqs)]
        loss = kl_loss(student_logits(lm, modules, ids), teacher_logits(lm, ids))
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)  # the model's own weights get no gradient
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    after = mean_kl(lm, modules, held)
    log.info("distillation: KL %.4g -> %.4g on %d sequences (%d steps, %.0f s)", before, after, len(held), steps,
             seconds)
    return {"steps": steps, "lr": lr, "sequences": len(seqs), "tokens": sum(int(s.shape[1]) for s in seqs),
            "kl_sequences": len(held), "kl_before": before, "kl_after": after, "train_seconds": round(seconds, 1),
            "device": str(lm.device)}


def check_distill_knobs(steps: int, lr: float) -> None:
    if int(steps) != steps or steps < 0:
        raise ValueError(f"distill_steps must be an integer >= 0, got {steps}")
    if not 0.0 < lr <= 1.0:
        raise ValueError(f"distill_lr must be in (0, 1], got {lr}")
