"""The retrieval suite's Markdown report (retrieval.py): accuracy against the share reached, the needle
grids, and "what it shows", written from the numbers. Plain text only, no plotting.
"""

from __future__ import annotations

from .retrieval import BASELINE

SUBJECT, LOCAL = "pyramid", "streaming"  # the paper's claim: PyramidInfer keeps what a local window loses
NAMED_IN_ISSUE = ("h2o", "snapkv")       # baselines the comparison names; they run once registered
EARLY = 0.5                              # depths at or before this are "early" in the document
REACH = 0.005                            # a share this close to a curve's end reads its end point


def curve(points: list[dict], mode: str) -> list[tuple[float, float]]:
    """A mode's (share reached, single-fact accuracy) points that were answered, by share."""
    return sorted((p["kv_share"], p["accuracy"]["single"]) for p in points
                  if p["mode"] == mode and p["kv_share"] is not None and "single" in p["accuracy"])


def accuracy_at(points: list[dict], mode: str, share: float) -> float | None:
    """The mode's single-fact accuracy at `share`, linear between its two nearest points; None outside
    the shares it reached, give or take REACH (no extrapolation)."""
    pts = curve(points, mode)
    if pts and pts[0][0] - REACH <= share < pts[0][0]:
        return pts[0][1]
    if pts and pts[-1][0] < share <= pts[-1][0] + REACH:
        return pts[-1][1]
    for (s0, a0), (s1, a1) in zip(pts, pts[1:]):
        if s0 <= share <= s1:
            return a0 if s1 == s0 else a0 + (a1 - a0) * (share - s0) / (s1 - s0)
    return next((a for s, a in pts if abs(s - share) < 1e-9), None)


def by_depth(grid: dict) -> dict[str, float]:
    """{depth: accuracy} over all lengths of a needle grid {length: {depth: accuracy}}."""
    cols = {}
    for row in grid.values():
        for d, v in row.items():
            cols.setdefault(d, []).append(v)
    return {d: sum(v) / len(v) for d, v in sorted(cols.items(), key=lambda kv: float(kv[0]))}


def budgeted_modes(points: list[dict]) -> list[str]:
    return list(dict.fromkeys(p["mode"] for p in points if p["budget"] is not None))


def retrieval_markdown(result: dict) -> str:
    s, points = result["settings"], result["points"]
    kinds = sorted({k for p in points for k in p["accuracy"]}, key=lambda k: (k != "single", k))
    lines = [f"# Retrieval under a KV budget: {result['model']}", "",
             f"{result['date']}, {result['device']}, torch {result['versions']['torch']}, transformers "
             f"{result['versions']['transformers']}, {result['dtype']}; the suite took {result['elapsed_s']:.0f} s "
             f"({result['cpu_s']:.0f} s of CPU time; {result['load']}).", "",
             f"{len(result['tasks'])} held-out reading tasks from {result['task_file']}: kinds {', '.join(s['kinds'])}, "
             f"prompt lengths {', '.join(map(str, s['lengths']))} tokens, single-fact depths "
             f"{', '.join(f'{d:g}' for d in s['depths'])}, "
             + (f"at most {s['per_cell']} per cell" if s["per_cell"] else "every stored task") + ". A task is "
             "right when the greedy answer up to its first newline equals the stored one (case, spaces and a final "
             "full stop aside).", "",
             "Share reached = slots held (layers x KV groups x tokens) over the full cache's, measured per task from "
             "the engine's records and averaged over the answer's generation (prefill included); a RecurFormer "
             "group keeps a fixed-size state and no tokens. Budgets asked: "
             f"{', '.join(f'{b:g}' for b in s['budgets'])}; modes without a budget run once at their own share.", "",
             _registry_note(result["modes"]), "",
             "## Accuracy against the share reached", "",
             "| mode | budget asked | share reached | " + " | ".join(f"{k} accuracy" for k in kinds) + " | refused |",
             "| --- | --- | --- | " + " | ".join("---" for _ in kinds) + " | --- |"]
    for p in points:
        cells = [f"{p['accuracy'][k]:.1%} ({round(p['accuracy'][k] * p['count'][k])}/{p['count'][k]})"
                 if k in p["accuracy"] else "-" for k in kinds]
        share = "-" if p["kv_share"] is None else f"{p['kv_share']:.3f}"
        budget = "own" if p["budget"] is None else f"{p['budget']:g}"
        lines.append(f"| {p['mode']} | {budget} | {share} | " + " | ".join(cells) + f" | {p['refused']} |")
    refusals = {(p["mode"], p["refusal"]) for p in points if p["refusal"]}
    if refusals:
        lines += ["", "Refused: " + "; ".join(f"{m}: {r}" for m, r in sorted(refusals))]
    lines += ["", f"## Needle grids (single fact) at budget {s['grid_budget']:g}", "",
              "Accuracy per prompt length (rows, tokens at most) and depth of the fact (columns, 0 = the "
              "document's start); modes without a budget at their own share.", ""]
    for mode, g in result["grids"].items():
        lines += _grid_table(mode, g)
    lines += ["## What it shows", "", what_it_shows(result), ""]
    return "\n".join(lines)


def _registry_note(modes: list[str]) -> str:
    missing = [m for m in NAMED_IN_ISSUE if m not in modes]
    note = f"Modes (the policy registry): {', '.join(modes)}."
    if missing:
        note += (f" Not registered in this build, so not run: {', '.join(missing)} (they join when their "
                 "policies are in the registry; re-run the suite then).")
    return note


def _grid_table(mode: str, g: dict) -> list[str]:
    if not g["grid"]:
        return [f"{mode}: no single-fact task answered.", ""]
    depths = sorted({d for row in g["grid"].values() for d in row}, key=float)
    share = "-" if g["kv_share"] is None else f"{g['kv_share']:.3f}"
    return [f"{mode} (share reached {share}):", "",
            "| length | " + " | ".join(f"depth {d}" for d in depths) + " |",
            "| --- | " + " | ".join("---" for _ in depths) + " |",
            *[f"| {n} | " + " | ".join(f"{row[d]:.0%}" if d in row else "-" for d in depths) + " |"
              for n, row in g["grid"].items()], ""]


def what_it_shows(result: dict) -> str:
    """Item 5 of issue 17: the paper's claim against the measurements, with the reason, from the numbers."""
    points, grids = result["points"], result["grids"]
    base = next(p for p in points if p["mode"] == BASELINE)
    n = base["count"]["single"]
    out = [f"With the full cache the model answers {base['accuracy']['single']:.1%} of the {n} single-fact tasks; "
           f"one task is {1 / n:.1%} of a point, so differences of a task or two are noise."]
    subject = [p for p in points if p["mode"] == SUBJECT and p["kv_share"] is not None]
    if not subject or not curve(points, LOCAL):
        return " ".join(out + [f"{SUBJECT} or {LOCAL} did not run, so the claim is not tested here."])
    out.append(_reach(subject))
    others = [m for m in budgeted_modes(points) if m != SUBJECT]
    margin = 1 / n + 1e-9  # more than one task's difference counts as a win or a loss
    tally = {"win": 0, "tie": 0, "loss": 0}
    for p in {round(p["kv_share"], 3): p for p in subject}.values():  # budgets out of reach repeat a share
        here = {m: accuracy_at(points, m, p["kv_share"]) for m in others}
        if here.get(LOCAL) is not None:
            diff = p["accuracy"]["single"] - here[LOCAL]
            tally["win" if diff > margin else "loss" if diff < -margin else "tie"] += 1
        rest = ", ".join(f"{m} {a:.1%}" for m, a in here.items() if a is not None)
        out.append(f"At share {p['kv_share']:.3f} PyramidInfer answers {p['accuracy']['single']:.1%}"
                   + (f"; at the same share {rest}." if rest else "."))
    out.append(_verdict(tally))
    out += _depth_sentences(grids)
    return " ".join(out)


def _verdict(tally: dict) -> str:
    total = sum(tally.values())
    counts = f"more than one task ahead of the local window at {tally['win']} of the {total} shares compared, " \
             f"level at {tally['tie']}, behind at {tally['loss']}"
    if not total:
        return "No share was reached by both, so the claim is not tested here."
    if tally["win"] == total:
        return f"PyramidInfer is {counts}: on this model the claim holds at every share compared."
    if tally["win"] == 0:
        return (f"PyramidInfer is {counts}: on this model, at these shares, the claim does not hold; the local "
                "window keeps as much of the context that matters, or more.")
    return f"PyramidInfer is {counts}: on this model the claim holds at some shares, not throughout."


def _reach(subject: list[dict]) -> str:
    low = min(subject, key=lambda p: p["kv_share"])
    missed = [p for p in subject if p["kv_share"] > p["budget"] + 0.015]
    if not missed:
        return f"PyramidInfer reached every budget asked (lowest share {low['kv_share']:.3f})."
    return (f"PyramidInfer reached no share below {low['kv_share']:.3f}: asked "
            + ", ".join(f"{p['budget']:g} it held {p['kv_share']:.3f}" for p in missed)
            + ", so it is compared at the shares it reached, with the other modes read off their curves there.")


def _depth_sentences(grids: dict) -> list[str]:
    """Where in the document each mode loses the fact at the grid budget, against the baseline: the
    reason behind the totals."""
    if any(m not in grids or not grids[m]["grid"] for m in (BASELINE, SUBJECT, LOCAL)):
        return []
    early = {m: _early_late(grids[m]["grid"]) for m in (BASELINE, LOCAL, SUBJECT)}
    out = [f"By depth of the fact (needle grids): the baseline finds facts in the first half of the document "
           f"(depth up to {EARLY:g}) in {early[BASELINE][0]:.0%} of tasks and later ones in {early[BASELINE][1]:.0%}; "
           + "; ".join(f"{m} (share {grids[m]['kv_share']:.3f}) {early[m][0]:.0%} and {early[m][1]:.0%}"
                       for m in (LOCAL, SUBJECT)) + "."]
    if early[LOCAL][0] < early[BASELINE][0] - 0.2:
        out.append("The local window loses early facts by construction: it holds the sinks and the document's end.")
    if early[SUBJECT][0] < early[BASELINE][0] - 0.2:
        out.append("PyramidInfer loses early facts too. It picks what to keep from the attention of its recent window "
                   "(the prompt's last tokens: the question and the document's end), layer by layer during the "
                   "prefill, and a token it drops leaves the hidden states of every deeper layer; a fact that the "
                   "shallow layers' recent queries do not attend to is gone before the deeper layers that would "
                   "retrieve it run.")
    return out


def _early_late(grid: dict) -> tuple[float, float]:
    cols = by_depth(grid)
    early = [v for d, v in cols.items() if float(d) <= EARLY]
    late = [v for d, v in cols.items() if float(d) > EARLY]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return mean(early), mean(late)
