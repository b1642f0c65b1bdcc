"""Markdown reports of the quality evaluation (evaluate.py): tables plus a "what we measured" paragraph
written from the numbers. Plain text only, no plotting.
"""

from __future__ import annotations

from .evaluate import RETRIEVAL_MARGIN, copies, perplexity


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
             "after the prefill, and averaged over the greedy decode steps. A budget asks for the share "
             "averaged over every record of a greedy run (prefill and decode); asked and reached are side by side.", "",
             "| mode | nominal budget | knobs | KV share asked | KV share reached | KV share prefill "
             "| KV share decode | ppl | ppl / baseline | probe acc | probe logprob | exact copy | agree prefix | agree equal |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             _row("baseline", "-", "-", base["kv_share"], base, 1.0, k, None)]
    ctrl = base["control"]
    lines.append(f"| baseline, no-span control | - | - | - | - | - | - | - | - | {ctrl['accuracy']:.3f} | "
                 f"{ctrl['mean_logprob']:.2f} | {ctrl[f'exact_copy_{k}']:.3f} | - | - |")
    for p in result["points"]:
        budget = "-" if p["nominal_budget"] is None else f"{p['nominal_budget']:g}"
        knobs = ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in p["knobs"].items()) \
            or "default"
        lines.append(_row(p["label"], budget, knobs, p["kv_share"], p, p["ppl_ratio"], k, p["agreement"]))
    lines += ["", "## What we measured", "", result.get("summary", ""), ""]
    return "\n".join(lines)


def _row(label, budget, knobs, share, r, ratio, k, agreement) -> str:
    agree = "1.000 | 1.000" if agreement is None else f"{agreement['prefix']:.3f} | {agreement['equal']:.3f}"
    pr = r["probe"]
    asked = "-" if r.get("kv_share_asked") is None else f"{r['kv_share_asked']:.3f}"
    reached = "-" if r.get("kv_share_reached") is None else f"{r['kv_share_reached']:.3f}"
    return (f"| {label} | {budget} | {knobs} | {asked} | {reached} | {share['prefill']:.3f} | {share['decode_mean']:.3f} | "
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


def reading_markdown(result: dict) -> str:
    """A Markdown report of the reading evaluation (`pyramid eval --reading`): accuracy per kind and mode, and
    the baseline's single-fact grid of length x depth."""
    s, modes = result["settings"], result["modes"]
    kinds = sorted({k for m in modes.values() for k in m["summary"]["accuracy"]})
    lines = [f"# Reading held-out tasks: {result['model']}", "",
             f"{result['date']}, {result['device']}, torch {result['versions']['torch']}, "
             f"transformers {result['versions']['transformers']}, {s['dtype']}; run took {result['elapsed_s']:.0f} s.",
             "", f"{s['count']} tasks from {s['tasks']} (held-out templates, names and texts). A task is right when "
             "the greedy answer, up to its first newline, equals the stored answer (case, surrounding spaces and "
             "a final full stop aside). KV share = mean over layers of kept / seen tokens after the prefill.", "",
             "| mode | KV share | " + " | ".join(kinds) + " |", "| --- | --- | " + " | ".join("---" for _ in kinds) + " |"]
    for mode, m in modes.items():
        acc, n = m["summary"]["accuracy"], m["summary"]["count"]
        cells = [f"{acc[k]:.1%} ({round(acc[k] * n[k])}/{n[k]})" if k in acc else "-" for k in kinds]
        lines.append(f"| {mode} | {m['summary']['kv_share']:.3f} | " + " | ".join(cells) + " |")
    grid = modes["baseline"]["summary"]["grid"]
    if grid:
        depths = list(next(iter(grid.values())))
        lines += ["", "Baseline, single fact, accuracy by prompt length (tokens, at most) and depth of the fact "
                  "(0 = start of the document, 1 = end):", "",
                  "| length | " + " | ".join(f"depth {d}" for d in depths) + " |",
                  "| --- | " + " | ".join("---" for _ in depths) + " |"]
        lines += [f"| {n} | " + " | ".join(f"{row.get(d, float('nan')):.0%}" for d in depths) + " |"
                  for n, row in grid.items()]
    if len(modes) > 1 and grid:
        lines += ["", "Single fact, accuracy by depth of the fact (all lengths together), every mode:", "",
                  "| mode | " + " | ".join(f"depth {d}" for d in depths) + " |",
                  "| --- | " + " | ".join("---" for _ in depths) + " |"]
        for mode, m in modes.items():
            by_depth = [[row[d] for row in m["summary"]["grid"].values() if d in row] for d in depths]
            lines.append(f"| {mode} | " + " | ".join(f"{sum(v) / len(v):.0%}" for v in by_depth) + " |")
    lines += ["", "## What we measured", "", reading_summary(result), ""]
    return "\n".join(lines)


def reading_summary(result: dict) -> str:
    base = result["modes"]["baseline"]["summary"]
    targets = result["settings"]["targets"]
    worst = min((v, n, d) for n, row in base["grid"].items() for d, v in row.items()) if base["grid"] else None
    accuracy = base["accuracy"]  # only the kinds scored (eval --reading-kinds may leave some out)
    parts = [f"{accuracy[k]:.1%} of the {k} tasks" + (f" (target {targets[k]:.0%}: "
             f"{'met' if accuracy[k] >= targets[k] else 'missed'})" if k in targets else "")
             for k in sorted(accuracy, key=lambda k: k not in targets)]  # the kinds with targets first
    text = "With the full cache the model answers " + "; ".join(parts) + "."
    if worst:
        grid_met = worst[0] >= targets.get("single", 0)
        text += (f" Its weakest single-fact cell is length {worst[1]}, depth {worst[2]} at {worst[0]:.0%}: the "
                 f"{targets.get('single', 0):.0%} target {'holds in every cell' if grid_met else 'is missed there'}.")
    for mode, m in result["modes"].items():
        if mode == "baseline":
            continue
        acc, kinds = m["summary"]["accuracy"], [k for k in targets if k in accuracy]
        text += (f" {mode} (KV share {m['summary']['kv_share']:.3f}): "
                 + ", ".join(f"{k} {acc[k]:.1%}" for k in kinds) + ", against "
                 + " and ".join(f"{accuracy[k]:.1%}" for k in kinds) + " for the baseline.") if kinds else ""
    return text
