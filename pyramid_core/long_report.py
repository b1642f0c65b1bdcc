"""The long-generation suite's Markdown report (long_generation.py), written from the numbers."""

from __future__ import annotations

from .long_generation import SUBJECT


def long_markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Long generations: {result['model']}", "",
             f"{result['date']}, {result['device']}, torch {result['versions']['torch']}, transformers "
             f"{result['versions']['transformers']}, {result['dtype']}; the suite took {result['elapsed_s']:.0f} s "
             f"({result['cpu_s']:.0f} s of CPU time; {result['load']}).", "",
             f"{s['prompts']} prompts of {s['prompt_tokens']} tokens (BOS and held-out text from {result['text']}), "
             f"{s['new_tokens']} greedy tokens each, no EOS stop. Agreement: the share of positions before the first "
             "token that differs from the baseline's (prefix) and of equal positions (equal). Perplexity: the "
             f"text's next {s['new_tokens']} tokens teacher-forced through decode steps after the compressed prompt, "
             "so the policy compresses while it reads them. Share reached: slots held over the full cache's, from "
             "the greedy runs' records, averaged over the generation. PyramidInfer runs at each budget asked; every "
             "other mode with a budget runs at the share PyramidInfer reached.", "",
             "Evicting steps: decode steps at which some layer of the first prompt held fewer tokens than at the step "
             "before plus the new one (from the records); events count (step, layer) pairs.", "",
             "| mode | budget asked | share reached | agree prefix | agree equal | ppl | ppl / baseline | "
             "evicting steps | events | first at step |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        agree = r.get("agreement", {"prefix": 1.0, "equal": 1.0})
        c = r["compressions"]
        budget = "-" if r["budget"] is None else f"{r['budget']:.3f}"
        lines.append(f"| {r['mode']} | {budget} | {r['kv_share']:.3f} | {agree['prefix']:.3f} | {agree['equal']:.3f} | "
                     f"{r['ppl']:.2f} | {r['ppl_ratio']:.3f} | {c['steps']} | {c['events']} | "
                     f"{'-' if c['first_step'] is None else c['first_step']} |")
    lines += [f"Refused: {sentence}" for sentence in result.get("refused", [])]
    lines += ["", "## Decode compression ran", "", compression_sentences(result), "",
              "## What it shows", "", long_summary(result), ""]
    return "\n".join(lines)


def compression_sentences(result: dict) -> str:
    """Whether PyramidInfer's decode compression ran several times, from the records, per budget."""
    out = []
    for r in result["rows"]:
        if r["mode"] != SUBJECT:
            continue
        c = r["compressions"]
        ran = "ran several times" if c["steps"] >= 2 else ("ran once" if c["steps"] == 1 else "never ran")
        out.append(f"PyramidInfer asked {r['budget']:g}: decode compression {ran}: at {c['steps']} of "
                   f"{result['settings']['new_tokens'] - 1} decode steps, {c['events']} layer events, the first at "
                   f"step {c['first_step']}; events per layer {c['per_layer']}.")
    return " ".join(out)


def long_summary(result: dict) -> str:
    """Each budget: PyramidInfer beside the modes run at its share, on perplexity and agreement."""
    rows = result["rows"]
    out = []
    for r in [r for r in rows if r["mode"] == SUBJECT]:
        peers = [p for p in rows if p.get("matched_to") == r["budget"]]
        reach = " (out of reach on this build)" if r["kv_share"] > r["budget"] + 0.015 else ""
        text = (f"Asked {r['budget']:g}, PyramidInfer held {r['kv_share']:.3f} of the KV over the generation{reach}: "
                f"perplexity {r['ppl_ratio']:.3f}x the baseline's, {r['agreement']['equal']:.1%} of tokens equal "
                f"({r['agreement']['prefix']:.1%} before the first difference)")
        for p in peers:
            better = [name for name, w in (("perplexity", r["ppl"] < p["ppl"]),
                                           ("agreement", r["agreement"]["equal"] > p["agreement"]["equal"])) if w]
            text += (f"; {p['mode']} at {p['kv_share']:.3f}: {p['ppl_ratio']:.3f}x, {p['agreement']['equal']:.1%} "
                     f"equal ({p['agreement']['prefix']:.1%} prefix), so PyramidInfer is ahead on "
                     + (" and ".join(better) if better else "neither"))
        out.append(text + ".")
    return " ".join(out)
