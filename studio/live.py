"""The live state of one comparison: the growing runs, and when the panes and figures are refreshed.

The engine appends records on the torch thread while the page's generator reads them (studio/stream.py),
so both go through one lock. Text is due every TEXT_EVERY_S of wall time, figures every PLOTS_EVERY_S:
never counted in steps, so a fast device streams as smoothly as a slow one. Building and sending an
update shares the machine with the generation, so updates that cost more come less often (TEXT_SHARE,
PLOTS_SHARE of the time), though text never less often than every TEXT_MAX_S.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import gradio as gr

from pyramid_core.models import LoadedModel
from pyramid_core.metrics import first_sequence_tokens
from pyramid_core.prompting import model_text
from pyramid_core.trace import StepRecord

from .figures import MEAN_HEAD, head_choices, run_figures, run_state
from .messages import note_html
from .modes import BASELINE, MODES
from .panes import BLANK_PANE, pane_html, pane_stats
from .sent import SENT_CODE, SENT_STATS, as_sent, sent

TEXT_EVERY_S = 0.15   # panes refresh at most this often (and at the end),
TEXT_SHARE = 0.03     # and rarely enough that their updates (building, Gradio's processing) take at most this
TEXT_MAX_S = 0.5      # share of the time, but at least this often: the text is what the user watches
PLOTS_EVERY_S = 1.5   # figures and the table refresh at most this often (and at the end),
PLOTS_SHARE = 0.03    # and rarely enough that their updates take at most this share of the time
POLL_S = 0.01         # how soon the page's generator looks again when an update is due but nothing is new


class Live:
    """The growing runs of one comparison, and what the panes and figures show of them."""

    def __init__(self, lm: LoadedModel, modes: list[str], view: dict, prompt: str | None = None, note: str = "",
                 chat: bool = False):
        """prompt: for the kept-words view's token texts and the prompt box; note: a notice for the page's
        message box (e.g. max new tokens clamped); chat: the prompt goes through the chat template."""
        self.lm, self.modes, self.view, self.prompt, self.note, self.chat = lm, modes, view, prompt, note, chat
        # the exact text the model reads, sent with the first update and the last only
        self.model_prompt = model_text(lm.tokenizer, prompt, chat) if prompt is not None else ""
        self.model_prompt_sent = False
        self.runs: dict[str, list[StepRecord]] = {m: [] for m in modes}
        self.lock = threading.Lock()  # the engine adds on the torch thread; the page reads on its own
        self.added = self.shown = 0   # records added, and how many of them the last update showed
        self.text_at = self.plots_at = 0.0
        self.text_gap, self.plots_gap = TEXT_EVERY_S, PLOTS_EVERY_S
        self.plotted = False  # whether the last update carried figures
        self.update_s = None  # running mean of a pane update's cost
        self.detail_steps: dict[str, int] = {}  # mode -> the step recorded in detail for the next figures
        self.figures = [gr.skip()] * 5  # the latest figures and table, as sent
        self.fit_view()

    def add(self, mode: str, record: StepRecord) -> None:
        with self.lock:
            self.runs[mode].append(record)
            slim(self.runs[mode])
            self.added += 1

    def wait_s(self) -> float:
        """Seconds until the panes are due (POLL_S at least)."""
        return max(POLL_S, self.text_at + self.text_gap - time.monotonic())

    def changed(self) -> bool:
        return self.added != self.shown

    def sent(self, seconds: float) -> None:
        """An update took `seconds` from building it to the handler's next step (Gradio's processing
        included: ~6 ms a pane update on a 2-core CPU, more with figures). The generation goes on
        meanwhile, but on a CPU it shares the cores, so updates come rarely enough to stay a small share."""
        if self.plotted:  # slow figures (long runs, many layers) are redrawn less often
            self.plots_gap = max(PLOTS_EVERY_S, seconds / PLOTS_SHARE)
            return
        self.update_s = seconds if self.update_s is None else (self.update_s + seconds) / 2
        self.text_gap = min(TEXT_MAX_S, max(TEXT_EVERY_S, self.update_s / TEXT_SHARE))

    def wants_detail(self, mode: str, step: int) -> bool:
        """Record attention and kept positions at the prefill, and at one step of each mode once the
        figures are due (the engine asks twice per step, for attention and for positions)."""
        with self.lock:
            if step == 0 or self.detail_steps.get(mode) == step:
                return True
            if mode in self.detail_steps or time.monotonic() - self.plots_at < self.plots_gap:
                return False
            self.detail_steps[mode] = step
            return True

    def outputs(self, final: bool = False) -> list:
        """Every output of the generate event, each as its component's postprocess makes it (the event
        runs without Gradio's postprocess: studio/sent.py says why)."""
        now = time.monotonic()
        # never in the first update: drawing the figures must not hold back the first text
        plots = final or (self.text_at > 0 and now - self.plots_at >= self.plots_gap)
        with self.lock:  # what the engine has made so far; it goes on adding while this update is built
            runs = {m: list(run) for m, run in self.runs.items()}
            self.shown = self.added
            if plots:  # the steps recorded in detail from here on are for the next figures
                self.detail_steps = {}
        texts = {m: self.text(runs[m]) for m in self.modes}
        # panes of modes not in this run are blanked rather than skipped: Gradio 6 rebuilds a component
        # for every gr.skip() output of every update (~0.7 ms each, 2-core CPU), plain values cost ~0.15
        panes = [pane_html(texts[m], texts.get(BASELINE)) if m in texts else BLANK_PANE for m in MODES]
        stats = [sent(SENT_STATS, pane_stats(runs[m], texts[m], texts.get(BASELINE), final))
                 if m in texts else "" for m in MODES]
        if plots:
            self.figures = as_sent(run_figures(runs, self.view))
        self.plotted = plots
        self.text_at = time.monotonic()
        self.plots_at = self.text_at if plots else self.plots_at
        state = run_state(self.lm, runs, self.prompt, self.chat) if final else gr.skip()
        model_prompt = sent(SENT_CODE, self.model_prompt) if final or not self.model_prompt_sent else gr.skip()
        self.model_prompt_sent = True
        return panes + stats + self.figures + [state, model_prompt, note_html(self.note, "notice")]

    def text(self, run: list[StepRecord]) -> str:
        return self.lm.tokenizer.decode(first_sequence_tokens(run), skip_special_tokens=True)

    def fit_view(self) -> None:
        """The attention view's layer, head and mode, within this model and run (the controls themselves
        follow the model box and the modes: fit_attention_controls, show_panes)."""
        cfg = self.lm.config
        layer = min(int(self.view["layer"] or 0), cfg.num_hidden_layers - 1)
        head = self.view["head"] if self.view["head"] in head_choices(cfg) else MEAN_HEAD
        mode = self.view["mode"] if self.view["mode"] in self.modes else self.modes[0]
        self.view.update(layer=layer, head=head, mode=mode)


def slim(run: list[StepRecord]) -> None:
    """When the newest record of a growing run carries attention or kept positions, drop them from the
    records before it (the prefill's excepted), in place.

    What the figures need is the prefill's and the latest recorded; keeping them for every step would
    grow with layers x heads x tokens per step. Called after every append, so older records are
    already slim: the walk back stops at the first record that holds whatever the newest one holds.
    """
    new = run[-1]
    wanted = {"attention": new.attention is not None, "kept_positions": new.kept_positions is not None}
    for i in range(len(run) - 2, 0, -1):
        if not any(wanted.values()):
            return
        old = run[i]
        drop = {k: None for k, want in wanted.items() if want and getattr(old, k) is not None}
        if drop:
            run[i] = dataclasses.replace(old, **drop)
            wanted.update({k: False for k in drop})
