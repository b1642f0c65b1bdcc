"""Quality of a KV-cache mode on held-out text (docs/design.md, "Measuring"), as curves over the KV fraction.

Three measurements, each against the full-cache baseline:

- continuation perplexity: the context is prefilled with the mode's compression, then the continuation
  is teacher-forced through decode steps (engine.teacher_forced_logits), so the policy also acts while
  the continuation is read; NLL is the mean over continuation tokens, perplexity its exp.
- a copied-span probe: a span S of held-out text is placed early in the context, ~700 tokens of other
  text follow, then the first cue_len tokens of S repeat as a cue. Scored: teacher-forced accuracy and
  mean log-prob of the rest of S, and the exact greedy copy rate of its next k tokens. Greedy decoding
  follows the teacher-forced path for as long as its argmax equals S, so "the first k argmaxes equal S"
  is exactly "greedy generation copies k tokens": no separate generation is needed. A control puts
  other text where S was (same cue, same target, S never shown), so a score above the control's is
  retrieval, not language modelling of the cue. The embedded model copies only at short range, so a
  second set of probes can use a short filler (build_data's short_filler).
- greedy agreement with the baseline: the share of positions before the first divergence, and the
  share of equal positions overall.

The KV share is measured from the engine's records (mean over layers of kept / seen tokens). The
number of slots each layer keeps depends only on the lengths (prompt, steps), never on token values,
for the pyramid and streaming policies, so the share measured on the greedy runs of a context length
holds for the teacher-forced runs of that length too; every context here has the same length. A
RecurFormer group keeps no tokens but a state, so named modes (run_named) are also compared by the
cache's bytes (records' kv_bytes: K, V and recurrent states) relative to the baseline's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .budget import Budget, solve
from .engine import generate, teacher_forced_logits
from .metrics import greedy_agreement, kv_share, kv_share_reached
from .models import LoadedModel
from .policies.base import Policy
from .trace import StepRecord

log = logging.getLogger(__name__)

RETRIEVAL_MARGIN = 0.05  # probe accuracy over the no-span control below which we say the model does not copy


# ----------------------------------------------------------------------------- small measures

def perplexity(nll: float) -> float:
    """exp of a mean NLL in nats."""
    return math.exp(nll)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) [B, n] from logits [B, n, V] (position i predicts targets[:, i])."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])[..., 0]


def continuation_logits(lm: LoadedModel, context_ids: torch.Tensor, continuation_ids: torch.Tensor,
                        policy: Policy | None = None) -> torch.Tensor:
    """Logits [B, n, V] predicting each of continuation_ids [B, n] after the compressed context [B, T]."""
    context_ids, continuation_ids = _batch(context_ids), _batch(continuation_ids)
    # the logits after the last forced token predict nothing we score: feed all but the last
    return teacher_forced_logits(lm, context_ids, continuation_ids[:, :-1], policy)


def continuation_nll(lm: LoadedModel, context_ids: torch.Tensor, continuation_ids: torch.Tensor,
                     policy: Policy | None = None) -> float:
    """Mean NLL (nats per token) of continuation_ids [B, n] after context_ids [B, T] under the policy."""
    continuation_ids = _batch(continuation_ids)
    logits = continuation_logits(lm, context_ids, continuation_ids, policy)
    return -token_logprobs(logits, continuation_ids.to(logits.device)).mean().item()


# ----------------------------------------------------------------------------- held-out text

def spaced_windows(ids: list[int], length: int, count: int, offset: float = 0.0) -> list[list[int]]:
    """`count` windows of `length` tokens spread evenly over ids; `offset` (0-1) shifts them by a share
    of the stride, so tasks that use different offsets read different text."""
    stride = (len(ids) - length) // max(count, 1)
    if count < 1 or stride < 1 or (count > 1 and stride < length):
        raise ValueError(f"{len(ids)} tokens of text hold fewer than {count} windows of {length}")
    starts = [int(offset * stride) + i * stride for i in range(count)]
    return [ids[s:s + length] for s in starts]


@dataclass
class Probe:
    """A copied-span probe: the context ends with the cue; `target` is the rest of the span."""

    ids: list[int]
    target: list[int]
    span_start: int  # index of the span's first token in ids (-1 for a control)


@dataclass
class ProbeLayout:
    prefix: int = 256    # tokens before the span
    span: int = 32       # tokens of the span S
    cue: int = 8         # first tokens of S repeated at the end
    filler: int = 727    # tokens between S and the cue; 1 + 256 + 32 + 727 + 8 = a 1024-token context

    @property
    def window(self) -> int:
        """Held-out tokens one probe reads: prefix, span, filler, and the control's replacement span."""
        return self.prefix + self.span + self.filler + self.span

    @property
    def context(self) -> int:
        return self.prefix + self.span + self.filler + self.cue  # without the BOS


def build_probes(window: list[int], layout: ProbeLayout, bos: int | None = None) -> tuple[Probe, Probe]:
    """(probe, control) from one window of held-out tokens.

    probe:   [bos] prefix S filler S[:cue], target S[cue:].
    control: the same with other text (the window's last `span` tokens) where S was.
    """
    if len(window) < layout.window or not 0 < layout.cue < layout.span:
        raise ValueError(f"a probe needs {layout.window} tokens and 0 < cue < span")
    p, s, f = layout.prefix, layout.span, layout.filler
    head = [] if bos is None else [bos]
    prefix, span, filler = window[:p], window[p:p + s], window[p + s:p + s + f]
    other = window[p + s + f:p + 2 * s + f]
    cue, target = span[:layout.cue], span[layout.cue:]
    probe = Probe(head + prefix + span + filler + cue, target, len(head) + p)
    control = Probe(head + prefix + other + filler + cue, target, -1)
    return probe, control


def copy_scores(lm: LoadedModel, probes: list[Probe], policy: Policy | None = None,
                k: int = 8) -> dict:
    """Mean teacher-forced accuracy and log-prob over the probes' targets, and the exact greedy copy
    rate of their first k target tokens. Probes must have equal lengths (one batch)."""
    ids = torch.tensor([p.ids for p in probes])
    target = torch.tensor([p.target for p in probes])
    if not 1 <= k <= target.shape[1]:
        raise ValueError(f"k must be in [1, {target.shape[1]}], got {k}")
    logits = continuation_logits(lm, ids, target, policy)
    target = target.to(logits.device)
    hits = logits.argmax(-1) == target
    return {"accuracy": hits.float().mean().item(),
            "mean_logprob": token_logprobs(logits, target).mean().item(),
            f"exact_copy_{k}": hits[:, :k].all(1).float().mean().item()}


# ----------------------------------------------------------------------------- one mode

def greedy_runs(lm: LoadedModel, prompts: torch.Tensor, policy: Policy | None,
                new_tokens: int) -> tuple[list[list[int]], list[StepRecord]]:
    """Greedy tokens per row [B][new_tokens] (no EOS stop) and the engine's records."""
    records = list(generate(lm, prompts, policy=policy, max_new_tokens=new_tokens))
    tokens = [[r.token_ids[row] for r in records] for row in range(prompts.shape[0])]
    return tokens, records


def share_summary(records: list[StepRecord]) -> dict:
    """The measured KV share after the prefill, averaged over the decode steps, and at the end."""
    decode = [kv_share(r) for r in records[1:]] or [kv_share(records[0])]
    return {"prefill": kv_share(records[0]), "decode_mean": sum(decode) / len(decode),
            "final": decode[-1]}


def kv_bytes_summary(records: list[StepRecord]) -> dict:
    """The cache's bytes (K, V and recurrent states, all rows) after the prefill, averaged over the
    decode steps, and at the end: the size that counts when replaced groups hold a state, not tokens."""
    decode = [r.kv_bytes for r in records[1:]] or [records[0].kv_bytes]
    return {"prefill": records[0].kv_bytes, "decode_mean": sum(decode) / len(decode), "final": decode[-1]}


def relative(summary: dict, baseline: dict) -> dict:
    """Each entry of `summary` divided by the baseline's same entry."""
    if any(baseline[key] <= 0 for key in summary):
        raise ValueError(f"the baseline has an empty entry: {baseline}")
    return {key: summary[key] / baseline[key] for key in summary}


@dataclass
class EvalData:
    """Everything the modes are scored on, built once from the held-out tokens."""

    contexts: torch.Tensor        # [N, T] perplexity windows' contexts (BOS first)
    continuations: torch.Tensor   # [N, n]
    probes: list[Probe]
    controls: list[Probe]
    prompts: torch.Tensor         # [M, T] agreement prompts
    new_tokens: int
    copy_k: int
    layout: ProbeLayout
    short_probes: list[Probe] = field(default_factory=list)    # the same probe with a short filler
    short_controls: list[Probe] = field(default_factory=list)
    short_layout: ProbeLayout | None = None


def build_data(ids: list[int], bos: int | None, samples: int, probes: int, context_tokens: int,
               continuation_tokens: int, new_tokens: int, copy_k: int = 8,
               short_filler: int = 0) -> EvalData:
    """Perplexity windows, probes and agreement prompts from held-out token ids, each set spread over
    the whole text at its own offset. Contexts all have context_tokens tokens (BOS included).
    short_filler > 0 adds as many probes again with that filler, at a range this model still copies."""
    head = [] if bos is None else [bos]
    body = context_tokens - len(head)
    wins = spaced_windows(ids, body + continuation_tokens, samples, offset=0.0)
    filler = body - 256 - 32 - 8
    if filler < 64:
        raise ValueError(f"--context-tokens {context_tokens} is too short for the copy probe (at least 361)")
    layout = ProbeLayout(filler=filler)
    pairs = [build_probes(w, layout, bos) for w in spaced_windows(ids, layout.window, probes, offset=0.33)]
    prompts = spaced_windows(ids, body, samples, offset=0.66)
    data = EvalData(contexts=torch.tensor([head + w[:body] for w in wins]),
                    continuations=torch.tensor([w[body:] for w in wins]),
                    probes=[p for p, _ in pairs], controls=[c for _, c in pairs],
                    prompts=torch.tensor([head + p for p in prompts]), new_tokens=new_tokens, copy_k=copy_k,
                    layout=layout)
    if short_filler > 0:
        data.short_layout = ProbeLayout(filler=short_filler)
        short = [build_probes(w, data.short_layout, bos)
                 for w in spaced_windows(ids, data.short_layout.window, probes, offset=0.83)]
        data.short_probes, data.short_controls = [p for p, _ in short], [c for _, c in short]
    return data


def evaluate_mode(lm: LoadedModel, data: EvalData, policy: Policy | None,
                  reference_tokens: list[list[int]] | None = None, batch: int = 8) -> dict:
    """Perplexity, probe, greedy tokens (and agreement with reference_tokens) and KV share of one mode."""
    nlls = []
    for i in range(0, data.contexts.shape[0], batch):
        ctx, cont = data.contexts[i:i + batch], data.continuations[i:i + batch]
        logits = continuation_logits(lm, ctx, cont, policy)
        nlls += (-token_logprobs(logits, cont.to(logits.device)).mean(1)).tolist()
    nll = sum(nlls) / len(nlls)
    probe = _batched_copy(lm, data.probes, policy, data.copy_k, batch)
    tokens, records = [], []
    for i in range(0, data.prompts.shape[0], batch):
        t, r = greedy_runs(lm, data.prompts[i:i + batch], policy, data.new_tokens)
        tokens += t
        records = records or r  # every batch has the same lengths, hence the same kept counts
    result = {"nll": nll, "ppl": perplexity(nll), "nll_per_window": nlls, "probe": probe,
              "kv_share": share_summary(records), "kv_bytes": kv_bytes_summary(records),
              "kv_share_asked": records[0].policy.get("kv_share_asked"), "kv_share_reached": kv_share_reached(records),
              "policy": records[0].policy, "greedy_tokens": tokens}
    if data.short_probes:
        result["short_probe"] = _batched_copy(lm, data.short_probes, policy, data.copy_k, batch)
    if reference_tokens is not None:
        pairs = [greedy_agreement(t, ref) for t, ref in zip(tokens, reference_tokens)]
        result["agreement"] = {"prefix": sum(p for p, _ in pairs) / len(pairs),
                               "equal": sum(e for _, e in pairs) / len(pairs)}
    return result


def _batched_copy(lm, probes: list[Probe], policy, k: int, batch: int) -> dict:
    parts = [(copy_scores(lm, probes[i:i + batch], policy, k), len(probes[i:i + batch]))
             for i in range(0, len(probes), batch)]
    total = sum(n for _, n in parts)
    return {key: sum(s[key] * n for s, n in parts) / total for key in parts[0][0]}


# ----------------------------------------------------------------------------- budgets and curves

def run_baseline(lm: LoadedModel, data: EvalData, batch: int = 8) -> dict:
    """The full cache, plus its scores on the no-span controls (what the probes must beat)."""
    log.info("baseline")
    baseline = evaluate_mode(lm, data, None, batch=batch)
    baseline["control"] = _batched_copy(lm, data.controls, None, data.copy_k, batch)
    if data.short_controls:
        baseline["short_control"] = _batched_copy(lm, data.short_controls, None, data.copy_k, batch)
    return baseline


def run_curves(lm: LoadedModel, data: EvalData, modes: list[str], budgets: list[float],
               batch: int = 8) -> dict:
    """The baseline, the PyramidInfer default point, and each mode at each budget (budget.solve: the
    share held over the greedy runs, whose records measure it)."""
    from .policies.registry import make_policy

    seen, layers = data.prompts.shape[1], lm.config.num_hidden_layers
    baseline = run_baseline(lm, data, batch)
    reference = baseline["greedy_tokens"]
    points = []

    def point(mode, label, budget, policy, knobs):
        log.info("%s (budget %s)", label, budget)
        result = evaluate_mode(lm, data, policy, reference, batch)
        result.update(mode=mode, label=label, nominal_budget=budget, knobs=knobs,
                      ppl_ratio=result["ppl"] / baseline["ppl"])
        points.append(result)

    if "pyramid" in modes:
        point("pyramid", "pyramid default", None, make_policy("pyramid"), {})
    for budget in budgets:
        for mode in modes:
            default = make_policy(mode)
            policy = solve(default, Budget(budget), seen, data.new_tokens, layers)
            point(mode, f"{mode} {budget:g}", budget, policy, solved_knobs(default, policy))
    return {"baseline": baseline, "points": points}


def solved_knobs(default: Policy, solved: Policy) -> dict:
    """The knobs the budget solver changed from the mode's defaults."""
    before, after = default.describe(), solved.describe()
    return {k: v for k, v in after.items() if k in before and before[k] != v}


# ----------------------------------------------------------------------------- named modes: RecurFormer

def adapter_share(groups: list[list[int]], num_layers: int, kv_heads: int) -> float:
    """Share of the model's KV groups ([layer, kv_group] pairs) an adapter replaces."""
    pairs = {tuple(g) for g in groups}
    bad = [p for p in pairs if not (0 <= p[0] < num_layers and 0 <= p[1] < kv_heads)]
    if bad:
        raise ValueError(f"groups {bad} are outside {num_layers} layers x {kv_heads} KV groups")
    return len(pairs) / (num_layers * kv_heads)


def recurformer_rows(adapters: dict[str, str], twin_window: int = 64, twin_sinks: int = 4) -> list[dict]:
    """The named modes of the RecurFormer comparison for each adapter (tag -> directory): its RNNs at
    their initialisation and trained, the training-free sink + window twin of the same groups, and the
    trained RNNs with PyramidInfer (default knobs) on the groups that remain."""
    rows = []
    for tag, path in adapters.items():
        twin = {"variant": "window", "twin_window": twin_window, "twin_sinks": twin_sinks}
        for mode, name, knobs in (("recurformer", "untrained", {"variant": "untrained"}),
                                  ("recurformer", "trained", {"variant": "trained"}),
                                  ("recurformer", f"window {twin_sinks}+{twin_window}", twin),
                                  ("pyramid+recurformer", "trained", {"variant": "trained"})):
            rows.append({"label": f"{mode} {name} {tag}", "mode": mode, "tag": tag,
                         "variant": knobs["variant"], "knobs": {"adapter": path, **knobs}})
    return rows


def run_named(lm: LoadedModel, data: EvalData, rows: list[dict], batch: int = 8) -> dict:
    """The baseline and each named row (label, mode, knobs, ...), with perplexity and KV bytes relative
    to the baseline's."""
    from .policies.registry import make_policy

    baseline = run_baseline(lm, data, batch)
    points = []
    for row in rows:
        log.info(row["label"])
        policy = make_policy(row["mode"], row["knobs"])
        result = evaluate_mode(lm, data, policy, baseline["greedy_tokens"], batch)
        result.update(row, ppl_ratio=result["ppl"] / baseline["ppl"],
                      kv_bytes_ratio=relative(result["kv_bytes"], baseline["kv_bytes"]))
        points.append(result)
    return {"baseline": baseline, "points": points}


def copies(baseline: dict, probe: str = "probe", control: str = "control") -> bool:
    """Whether the full cache predicts the span's target better than with the span never shown."""
    return baseline[probe]["accuracy"] - baseline[control]["accuracy"] >= RETRIEVAL_MARGIN


def _batch(ids: torch.Tensor) -> torch.Tensor:
    return ids[None] if ids.ndim == 1 else ids
