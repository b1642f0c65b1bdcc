"""Quality of a KV-cache mode on held-out text (DESIGN.md section 6), as curves over the KV fraction.

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
import torch.nn.functional as F

from .engine import generate, teacher_forced_logits
from .models import LoadedModel
from .policies.base import Policy
from .policies.pyramid import PyramidPolicy
from .trace import StepRecord

log = logging.getLogger(__name__)

# PyramidInfer knobs tried in order for a KV budget: the first whose prefill share can come within
# BUDGET_TOLERANCE of the budget is used. With 12 layers and the shipped recent window (20%) and
# min_context_length (64), the cosine schedule keeps at least ~62% of a 1k prompt whatever the decay.
PYRAMID_FALLBACKS = (
    {},
    {"recent_ratio": 0.1, "min_context_length": 32},
    {"recent_ratio": 0.1, "min_context_length": 32, "prefill_decay_strategy": "linear"},
    {"recent_ratio": 0.1, "min_context_length": 32, "prefill_decay_strategy": "constant"},
)
BUDGET_TOLERANCE = 0.02
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


def greedy_agreement(tokens: list[int], reference: list[int]) -> tuple[float, float]:
    """(prefix_fraction, equal_fraction) of `tokens` against `reference`, over len(reference) positions.

    prefix_fraction: positions before the first difference; equal_fraction: equal positions anywhere.
    Positions `tokens` lacks count as different.
    """
    if not reference:
        raise ValueError("the reference is empty")
    equal = [i < len(tokens) and tokens[i] == r for i, r in enumerate(reference)]
    prefix = equal.index(False) if False in equal else len(equal)
    return prefix / len(reference), sum(equal) / len(reference)


def measured_kv_share(record: StepRecord, row: int = 0) -> float:
    """Mean over layers of the slots a row's cache holds / the tokens it has seen."""
    kept = record.kept_tokens_per_row[row]
    seen = record.seen_tokens
    if seen <= 0 or not kept:
        raise ValueError("the record has no tokens")
    return sum(kept) / (len(kept) * seen)


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
    decode = [measured_kv_share(r) for r in records[1:]] or [measured_kv_share(records[0])]
    return {"prefill": measured_kv_share(records[0]), "decode_mean": sum(decode) / len(decode),
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


def pyramid_for_budget(budget: float, seen: int, num_layers: int) -> tuple[PyramidPolicy, dict]:
    """PyramidInfer solving its decay for `budget`, with the first knobs of PYRAMID_FALLBACKS whose
    solved prefill share lands within BUDGET_TOLERANCE of it; the last ones when none does."""
    quiet = logging.getLogger(PyramidPolicy.__module__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # rejected tries would each warn "out of reach"
    try:
        for knobs in PYRAMID_FALLBACKS:
            policy = PyramidPolicy(**knobs, kv_budget=budget)
            reached = policy.prefill_share(seen, num_layers, policy.solve_decay(seen, num_layers))
            if abs(reached - budget) <= BUDGET_TOLERANCE:
                break
        else:
            log.warning("no PyramidInfer knobs reach a KV budget of %.2f; using %s (%.3f)", budget, knobs, reached)
    finally:
        quiet.setLevel(level)
    return policy, knobs


def run_curves(lm: LoadedModel, data: EvalData, modes: list[str], budgets: list[float],
               batch: int = 8) -> dict:
    """The baseline, the PyramidInfer default point, and each mode at each budget."""
    from .policies.registry import make_policy

    seen, layers = data.contexts.shape[1], lm.config.num_hidden_layers
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
            if mode == "pyramid":
                policy, knobs = pyramid_for_budget(budget, seen, layers)
            else:
                policy, knobs = make_policy(mode, kv_budget=budget), {}
            point(mode, f"{mode} {budget:g}", budget, policy, knobs)
    return {"baseline": baseline, "points": points}


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


# ----------------------------------------------------------------------------- reports

def quality_markdown(result: dict) -> str:
    """A Markdown report of run_curves' result plus its settings (no plotting)."""
    s, base = result["settings"], result["baseline"]
    k = s["copy_k"]
    lines = [f"# Quality on held-out text: {result['model']}", "",
             f"{result['date']}, {result['device']}, torch {result['versions']['torch']}, "
             f"transformers {result['versions']['transformers']}; run took {result['elapsed_s']:.0f} s.", "",
             f"Settings: {s['samples']} perplexity windows of {s['context_tokens']} context + "
             f"{s['continuation_tokens']} continuation tokens; {s['probes']} copy probes (span {s['span']} "
             f"tokens at index {s['span_start']}, {s['filler']} filler tokens, cue {s['cue']}, "
             f"{s['span'] - s['cue']} target tokens, exact copy of the first {k}); {s['samples']} "
             f"agreement prompts of {s['context_tokens']} tokens, {s['new_tokens']} greedy tokens each. "
             f"Text: {s['text']} ({s['text_tokens']} tokens).", "",
             "KV share = mean over layers of kept / seen tokens, measured from the engine's records: "
             "after the prefill, and averaged over the greedy decode steps.", "",
             "| mode | nominal budget | knobs | KV share prefill | KV share decode | ppl | ppl / baseline "
             "| probe acc | probe logprob | exact copy | agree prefix | agree equal |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             _row("baseline", "-", "-", base["kv_share"], base, 1.0, k, None)]
    ctrl = base["control"]
    lines.append(f"| baseline, no-span control | - | - | - | - | - | - | {ctrl['accuracy']:.3f} | "
                 f"{ctrl['mean_logprob']:.2f} | {ctrl[f'exact_copy_{k}']:.3f} | - | - |")
    for p in result["points"]:
        budget = "-" if p["nominal_budget"] is None else f"{p['nominal_budget']:g}"
        knobs = ", ".join(f"{a}={b}" for a, b in p["knobs"].items()) or "default"
        lines.append(_row(p["label"], budget, knobs, p["kv_share"], p, p["ppl_ratio"], k, p["agreement"]))
    lines += ["", "## What we measured", "", result.get("summary", ""), ""]
    return "\n".join(lines)


def _row(label, budget, knobs, share, r, ratio, k, agreement) -> str:
    agree = "1.000 | 1.000" if agreement is None else f"{agreement['prefix']:.3f} | {agreement['equal']:.3f}"
    pr = r["probe"]
    return (f"| {label} | {budget} | {knobs} | {share['prefill']:.3f} | {share['decode_mean']:.3f} | "
            f"{r['ppl']:.2f} | {ratio:.3f} | {pr['accuracy']:.3f} | {pr['mean_logprob']:.2f} | "
            f"{pr[f'exact_copy_{k}']:.3f} | {agree} |")


def quality_summary(result: dict) -> str:
    """The "what we measured" paragraph, written from the numbers of run_curves' result."""
    base, k = result["baseline"], result["settings"]["copy_k"]
    points = {p["label"]: p for p in result["points"]}
    out = [f"The full cache reads the continuations at perplexity {base['ppl']:.2f}."]
    default = points.get("pyramid default")
    if default:
        out.append(f"PyramidInfer with its default (paper 7B) settings keeps {default['kv_share']['prefill']:.1%} "
                   f"of the KV after the prefill ({default['kv_share']['decode_mean']:.1%} over decoding) at "
                   f"perplexity {default['ppl']:.2f}, {default['ppl_ratio']:.3f}x the baseline "
                   f"({'within' if default['ppl_ratio'] <= 1.05 else 'outside'} the 5% target).")
    ctrl = base["control"]
    gain = base["probe"]["accuracy"] - ctrl["accuracy"]
    out.append(f"On the copy probe the baseline predicts {base['probe']['accuracy']:.1%} of the span's target "
               f"tokens and greedily copies the first {k} exactly in {base['probe'][f'exact_copy_{k}']:.1%} of "
               f"probes; with the span never shown (same cue) it predicts {ctrl['accuracy']:.1%} "
               f"({ctrl[f'exact_copy_{k}']:.1%} exact), "
               + ("so the probe measures retrieval." if gain >= RETRIEVAL_MARGIN else
                  f"so this model does not copy a span from {result['settings']['filler']} tokens back: "
                  "the probe cannot tell the modes apart, and its differences between modes are noise."))
    wins = {"ppl": [], "probe": [], "agreement": []}
    budgets = sorted({p["nominal_budget"] for p in result["points"] if p["nominal_budget"] is not None})
    for b in budgets:
        pyr, st = points.get(f"pyramid {b:g}"), points.get(f"streaming {b:g}")
        if not (pyr and st):
            continue
        wins["ppl"].append((b, pyr["ppl"] < st["ppl"]))
        wins["probe"].append((b, pyr["probe"]["accuracy"] > st["probe"]["accuracy"]))
        wins["agreement"].append((b, pyr["agreement"]["equal"] > st["agreement"]["equal"]))
        out.append(f"At budget {b:g}: PyramidInfer (KV share {pyr['kv_share']['prefill']:.3f} prefill, "
                   f"{pyr['kv_share']['decode_mean']:.3f} decode) ppl {pyr['ppl']:.2f}, probe accuracy "
                   f"{pyr['probe']['accuracy']:.1%}, agreement {pyr['agreement']['equal']:.1%}; streaming "
                   f"({st['kv_share']['prefill']:.3f}, {st['kv_share']['decode_mean']:.3f}) ppl {st['ppl']:.2f}, "
                   f"probe {st['probe']['accuracy']:.1%}, agreement {st['agreement']['equal']:.1%}.")
    for name, flags in wins.items():
        if flags:
            better = [f"{b:g}" for b, w in flags if w]
            out.append(f"PyramidInfer beats streaming on {name} at {len(better)} of {len(flags)} budgets"
                       + (f" ({', '.join(better)})." if better else "."))
    if any(not w for flags in wins.values() for _, w in flags):
        out.append("Where PyramidInfer loses, the likely reasons: streaming runs the whole prefill and only then "
                   "evicts, so its first token and the hidden states of the kept tokens are exact, while "
                   "PyramidInfer drops tokens from the hidden states between layers; and a small model that uses "
                   "mostly nearby context (perplexity hardly moves even at the smallest budget) is served well by "
                   "a contiguous recent window, which the low budgets shrink for PyramidInfer (recent_ratio 0.1).")
    return " ".join(out)


def named_markdown(result: dict) -> str:
    """A Markdown report of run_named's result plus its settings."""
    s, base, k = result["settings"], result["baseline"], result["settings"]["copy_k"]
    short = "short_probe" in base
    lines = [f"# RecurFormer quality on held-out text: {result['model']}", "",
             f"{result['date']}, {result['device']}, torch {result['versions']['torch']}, "
             f"transformers {result['versions']['transformers']}; run took {result['elapsed_s']:.0f} s.", "",
             f"Settings: {s['samples']} perplexity windows of {s['context_tokens']} context + "
             f"{s['continuation_tokens']} continuation tokens; {s['probes']} copy probes per range (span "
             f"{s['span']} tokens, cue {s['cue']}, {s['span'] - s['cue']} target tokens, exact copy of the first "
             f"{k}), long range with {s['filler']} filler tokens"
             + (f" and short range with {s['short_filler']}" if short else "")
             + f"; {s['samples']} agreement prompts of {s['context_tokens']} tokens, {s['new_tokens']} greedy "
             f"tokens each. Window twin: {s['twin_sinks']} sinks + {s['twin_window']} recent tokens. "
             f"Text: {s['text']} ({s['text_tokens']} tokens).", "",
             "Adapters: " + "; ".join(f"{tag} = {path} ({n} groups)" for tag, (path, n) in s["adapters"].items())
             + ".", "",
             "KV bytes = the engine's kv_bytes (keys, values and recurrent or window states, all rows of the "
             "first agreement batch) over the baseline's: after the prefill, and averaged over the greedy "
             "decode steps. Token share = mean over layers of kept / seen tokens (a replaced group keeps "
             "no tokens but is not counted here, so it stays 1 for recurformer alone).", "",
             "| mode | KV bytes prefill | KV bytes decode | token share | ppl | ppl / baseline | probe acc | "
             "probe exact | short acc | short logprob | short exact | agree prefix | agree equal |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             _named_row("baseline", base, {"prefill": 1.0, "decode_mean": 1.0}, 1.0, k, None)]
    ctrl, sctrl = base["control"], base.get("short_control")
    lines.append(f"| baseline, no-span controls | - | - | - | - | - | {ctrl['accuracy']:.3f} | "
                 f"{ctrl[f'exact_copy_{k}']:.3f} | "
                 + (f"{sctrl['accuracy']:.3f} | {sctrl['mean_logprob']:.2f} | {sctrl[f'exact_copy_{k}']:.3f}"
                    if sctrl else "- | - | -") + " | - | - |")
    for p in result["points"]:
        lines.append(_named_row(p["label"], p, p["kv_bytes_ratio"], p["ppl_ratio"], k, p["agreement"]))
    lines += ["", "## What we measured", "", result.get("summary", ""), ""]
    return "\n".join(lines)


def _named_row(label, r, kv, ratio, k, agreement) -> str:
    agree = "1.000 | 1.000" if agreement is None else f"{agreement['prefix']:.3f} | {agreement['equal']:.3f}"
    sp = r.get("short_probe")
    short = (f"{sp['accuracy']:.3f} | {sp['mean_logprob']:.2f} | {sp[f'exact_copy_{k}']:.3f}" if sp
             else "- | - | -")
    return (f"| {label} | {kv['prefill']:.3f} | {kv['decode_mean']:.3f} | {r['kv_share']['prefill']:.3f} | "
            f"{r['ppl']:.2f} | {ratio:.3f} | {r['probe']['accuracy']:.3f} | {r['probe'][f'exact_copy_{k}']:.3f} | "
            f"{short} | {agree} |")


def named_summary(result: dict) -> str:
    """The "what we measured" paragraph of run_named's RecurFormer rows, written from the numbers."""
    base, s = result["baseline"], result["settings"]
    probe = "short_probe" if "short_probe" in base else "probe"
    control = "short_control" if probe == "short_probe" else "control"
    filler = s["short_filler"] if probe == "short_probe" else s["filler"]
    windows = [perplexity(n) for n in base["nll_per_window"]]
    out = [f"The full cache reads the continuations at perplexity {base['ppl']:.2f} (per window "
           f"{min(windows):.1f} to {max(windows):.1f}, so ratios to the baseline say more than absolute values)."]
    if copies(base, "probe", "control"):
        out.append(f"The baseline copies from {s['filler']} tokens back.")
    else:
        out.append(f"As in the KV-budget report, the baseline does not copy from {s['filler']} tokens back "
                   f"(probe accuracy {base['probe']['accuracy']:.1%}, control {base['control']['accuracy']:.1%}),"
                   " so the long-range probe cannot rank the modes.")
    if probe == "short_probe":
        b, c = base[probe]["accuracy"], base[control]["accuracy"]
        out.append(f"With {filler} filler tokens it predicts {b:.1%} of the span's target tokens against "
                   f"{c:.1%} with the span never shown, "
                   + ("so the short probe measures retrieval; it is the probe compared below." if copies(
                       base, probe, control) else "so even the short probe measures no retrieval and is noise."))
    k = s["copy_k"]
    if base[probe][f"exact_copy_{k}"] == 0:
        out.append(f"Not even the baseline greedily copies {k} tokens exactly, so the exact-copy columns carry "
                   "no signal.")
    rows = {(p["tag"], p["mode"], p["variant"]): p for p in result["points"]}
    for tag in dict.fromkeys(p["tag"] for p in result["points"]):
        out += _tag_sentences(tag, rows, probe)
    return " ".join(out)


def _tag_sentences(tag: str, rows: dict, probe: str) -> list[str]:
    def brief(p):
        return (f"ppl {p['ppl']:.2f} ({p['ppl_ratio']:.3f}x), {probe.replace('_', ' ')} "
                f"{p[probe]['accuracy']:.1%}, agreement {p['agreement']['equal']:.1%}, KV bytes "
                f"{p['kv_bytes_ratio']['decode_mean']:.3f} of the baseline")

    untrained, trained = rows.get((tag, "recurformer", "untrained")), rows.get((tag, "recurformer", "trained"))
    twin, both = rows.get((tag, "recurformer", "window")), rows.get((tag, "pyramid+recurformer", "trained"))
    out = [f"With {tag} of the KV groups replaced:"]
    for name, p in (("untrained", untrained), ("trained", trained), ("window twin", twin),
                    ("pyramid+recurformer", both)):
        if p:
            out.append(f"{name} {brief(p)};")
    if trained and untrained:
        wins = [m for m, w in _better(trained, untrained, probe).items() if w]
        out.append(f"the trained adapter beats its untrained initialisation on {len(wins)} of 3 measures"
                   + (f" ({', '.join(wins)})." if wins else "."))
    if trained and twin:
        wins = [m for m, w in _better(trained, twin, probe).items() if w]
        lower = sum(a < b for a, b in zip(trained["nll_per_window"], twin["nll_per_window"]))
        out.append(f"Against the sink + window twin of the same groups it wins on {len(wins)} of 3"
                   + (f" ({', '.join(wins)})" if wins else "")
                   + f" and has the lower NLL in {lower} of {len(twin['nll_per_window'])} windows"
                   + (": on perplexity the trained RNNs are at least as good as the training-free twin here." if
                      trained["ppl"] <= twin["ppl"] else
                      f": on perplexity the training-free twin is better ({twin['ppl']:.2f} against "
                      f"{trained['ppl']:.2f}), so the training has not yet paid for itself on this model."))
    if both and trained:
        kv_trained, kv_both = trained["kv_bytes_ratio"]["decode_mean"], both["kv_bytes_ratio"]["decode_mean"]
        out.append(f"Adding PyramidInfer (default knobs) to the trained RNNs takes the KV bytes from "
                   f"{kv_trained:.3f} to {kv_both:.3f} of the baseline at perplexity {both['ppl']:.2f} against "
                   f"{trained['ppl']:.2f}.")
    return out


def _better(a: dict, b: dict, probe: str) -> dict:
    """Where mode a beats mode b: lower perplexity, higher probe accuracy, higher greedy agreement."""
    return {"perplexity": a["ppl"] < b["ppl"],
            probe.replace("_", " "): a[probe]["accuracy"] > b[probe]["accuracy"],
            "agreement": a["agreement"]["equal"] > b["agreement"]["equal"]}


def recency_rows(report, near: float = 0.5, far: float = 0.5) -> list[dict]:
    """Per layer: mean window mass, the most local and most far-reaching head, and head counts.

    A head is local when its window mass (the query and the `window` keys before it) exceeds `near`;
    it reaches far when the mass outside the window and the sinks exceeds `far`.
    """
    rows = []
    for layer, (recent, sink) in enumerate(zip(report.scores, report.sink_mass)):
        beyond = [1 - r - s for r, s in zip(recent, sink)]
        rows.append({"layer": layer, "mean_recent": sum(recent) / len(recent), "most_local": max(recent),
                     "most_far_reaching": min(recent), "mean_sink": sum(sink) / len(sink),
                     "max_beyond": max(beyond), "local_heads": sum(r > near for r in recent),
                     "far_heads": sum(b > far for b in beyond), "heads": len(recent)})
    return rows


def recency_summary(rows: list[dict]) -> str:
    """One paragraph from recency_rows: where the local and the far-reaching heads are."""
    local = [r["layer"] for r in rows if r["local_heads"]]
    far = [r["layer"] for r in rows if r["far_heads"]]
    both = [r["layer"] for r in rows if r["local_heads"] and r["far_heads"]]
    n_local, n_far = sum(r["local_heads"] for r in rows), sum(r["far_heads"] for r in rows)
    total = sum(r["heads"] for r in rows)
    spread = max(rows, key=lambda r: r["most_local"] - r["most_far_reaching"])
    return (f"{n_local} of {total} heads concentrate near the query (layers {local or 'none'}) and {n_far} reach "
            f"far (layers {far or 'none'}); {len(both)} layers hold both kinds. The widest spread within a "
            f"layer is in layer {spread['layer']}: its most local head puts {spread['most_local']:.2f} of its "
            f"mass in the window, its most far-reaching head {spread['most_far_reaching']:.2f}.")


def recency_markdown(rows: list[dict], meta: dict) -> str:
    w = meta["window"]
    lines = [f"# Recency structure: {meta['model']}", "",
             f"{meta['date']}; recurformer.recency.recency_scores on {meta['text']}: {meta['sequences']} "
             f"sequences of {meta['max_tokens']} tokens, window {w}, sink_len {meta['sink_len']}.", "",
             f"recent = attention mass a query head puts on itself and the {w} keys before it, averaged over "
             f"queries; sink = mass on the first {meta['sink_len']} tokens; beyond = 1 - recent - sink. "
             f"Local head: recent > {meta['near']}; far head: beyond > {meta['far']}.", "",
             "| layer | mean recent | most local head | most far-reaching head | mean sink | max beyond "
             "| local heads | far heads |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['mean_recent']:.3f} | {r['most_local']:.3f} | "
                     f"{r['most_far_reaching']:.3f} | {r['mean_sink']:.3f} | {r['max_beyond']:.3f} | "
                     f"{r['local_heads']}/{r['heads']} | {r['far_heads']}/{r['heads']} |")
    lines += ["", "## What we measured", "", meta.get("summary", ""), ""]
    return "\n".join(lines)


def _batch(ids: torch.Tensor) -> torch.Tensor:
    return ids[None] if ids.ndim == 1 else ids
