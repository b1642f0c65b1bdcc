"""The app in a real browser (Debian's Chromium driven by Playwright) at 1280 px: pick every mode, type a
prompt, generate, and wait for the panes and the figures; the page is saved to $SCREENSHOT (default: the
temp directory; the README's docs/screenshot.png is refreshed by setting it). Then the KV, pyramid,
attention and recency figures are checked for overlapping or repeated titles, labels and legend entries
and for untitled panels, and bad inputs for one message in the page and no "Error" badge (issue 18).

The model is a tiny local checkpoint unless PYRAMID_MODEL names another (e.g. "embedded" for a
screenshot with real words).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import pytest

import app
import visual
from pyramid_core.resources import asset
from tests import served
from tests.served import free_port
from tests.tiny_models import save_tiny_checkpoint

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
# The README's picture is refreshed on purpose (SCREENSHOT=docs/screenshot.png PYRAMID_MODEL=embedded),
# not by every test run.
SCREENSHOT = Path(os.environ.get("SCREENSHOT") or Path(tempfile.gettempdir()) / "pyramid-studio-screenshot.png")
MODES = tuple(app.MODES)  # every mode: the page must stay legible at 1280 px with all of them
NEW_TOKENS = 32
PROMPT = "the cat sat on the mat and a dog ran far away " * 4
ANSWER = None  # a real model stops at its answer: the baseline's pane must then show it
if os.environ.get("PYRAMID_MODEL"):  # a real model: the needle sample, where a local window loses the fact
    import json

    SAMPLE = next(s for s in json.loads(asset("sample_prompts.json").read_text())
                  if "needle" in s.get("name", "").lower())
    PROMPT, ANSWER = SAMPLE["prompt"], SAMPLE["answer"]
TIMEOUT_MS = 120_000  # generous: the CI machine may be busy with training


@pytest.fixture(scope="module")
def sync_playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is absent: pip install playwright (no browser download needed)")
    return sync_playwright


@pytest.fixture(scope="module")
def url(tmp_path_factory, sync_playwright, monkeypatch_module):
    model = os.environ.get("PYRAMID_MODEL") or str(save_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))
    if "PYRAMID_MODEL" not in os.environ:
        from transformers import GenerationConfig

        config = GenerationConfig.from_pretrained(model)
        config.eos_token_id = None  # random weights may sample EOS early; the test waits for every token
        config.save_pretrained(model)
        # the shipped RecurFormer adapter fits the embedded model: the tiny one gets its own
        from pyramid_core import load_model
        from pyramid_core.policies import recurformer
        from tests.test_recurformer_engine import make_adapter

        adapter = make_adapter(load_model(model, device="cpu"), tmp_path_factory.mktemp("adapter"), [[1, 0]])
        monkeypatch_module.setattr(recurformer, "DEFAULT_ADAPTER", adapter)
        # studio/recency.py holds its own name for it: the recency figure marks this adapter's heads
        import studio.recency

        monkeypatch_module.setattr(studio.recency, "DEFAULT_ADAPTER", adapter)
    monkeypatch_module.setattr(app, "DEFAULT_MODEL", model)
    demo = app.build_ui()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, css=app.CSS)
    yield f"http://127.0.0.1:{port}/"
    served.close(demo)


# a figure's titles, axis titles, panel titles (annotations), legend entries and colour-bar titles
TEXTS = ".annotation-text, .gtitle, .xtitle, .ytitle, .legendtext, .cbtitle text"
BOX = "e => { const r = e.getBoundingClientRect(); return [e.textContent, r.left, r.top, r.right, r.bottom]; }"


def text_boxes(plot, texts: str = TEXTS) -> list:
    """[text, left, top, right, bottom] of every drawn title, label and key entry of one figure (a
    Playwright locator)."""
    return plot.locator(f":is({texts})").evaluate_all(f"els => els.map({BOX}).filter(b => b[3] > b[1])")


def assert_no_overlap(plot, name: str) -> None:
    """No two of a figure's titles, axis titles, panel titles or legend entries overlap on screen, and
    none is drawn twice (a title repeated under every panel is what ran together at 1280 px)."""
    boxes = text_boxes(plot)
    assert len(boxes) >= 3, f"{name}: too few texts found: {boxes}"
    texts = [b[0] for b in boxes]
    assert len(set(texts)) == len(texts), f"{name}: a title drawn more than once: {texts}"
    for i, (a, *ra) in enumerate(boxes):
        for b, *rb in boxes[i + 1:]:
            apart = ra[2] <= rb[0] or rb[2] <= ra[0] or ra[3] <= rb[1] or rb[3] <= ra[1]
            assert apart, f"{name}: {a!r} overlaps {b!r} at 1280 px"


def assert_panels_titled(plot, name: str) -> None:
    """Every panel (a plot area: Plotly's drag rectangle) has a title above it: the figure's own title
    when it is the only panel, else a panel title (an annotation) centred over it."""
    panels = plot.locator(".draglayer .nsewdrag").evaluate_all(f"els => els.map({BOX})")
    assert panels, f"{name}: no panel drawn"
    titles = [b for b in text_boxes(plot, ".gtitle" if len(panels) == 1 else ".annotation-text") if b[0].strip()]
    for _, left, top, right, _ in panels:
        if len(panels) == 1:  # the figure's title starts at the left edge: it need only reach over the panel
            above = [t for t, tl, _, tr, tb in titles if tb <= top + 2 and tl < right and tr > left]
        else:
            above = [t for t, tl, _, tr, tb in titles if tb <= top + 2 and left <= (tl + tr) / 2 <= right]
        assert above, f"{name}: the panel at x {left:.0f}..{right:.0f} has no title above it: {titles}"


# Drawn for the eye: Gradio keeps every output's status tracker, "Error" badge included, in the page and
# hides it with opacity 0 (which Playwright's is_visible() does not look at)
SHOWN = """e => { for (let n = e; n; n = n.parentElement) { const c = getComputedStyle(n);
    if (c.display === 'none' || c.visibility === 'hidden' || c.opacity === '0') return false; }
  const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; }"""
# the output a badge sits on: its block's id, else its label
WHERE = "e => { const b = e.closest('.block'); return b && (b.id || b.querySelector('label')?.textContent); }"


def assert_no_error_badge(page) -> None:
    """Gradio marks an output whose event failed with an "Error" badge (its status tracker) and pops up
    an error toast: the studio says errors in its message box instead (studio/messages.py)."""
    badges = page.locator("[data-testid=status-tracker] .error")
    shown = [badges.nth(i).evaluate(WHERE) for i in range(badges.count()) if badges.nth(i).evaluate(SHOWN)]
    assert not shown, f"error badges shown over outputs: {shown}"
    toasts = page.locator("[data-testid=toast-body].error")
    assert not any(toasts.nth(i).evaluate(SHOWN) for i in range(toasts.count())), "an error pop-up is shown"


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@contextlib.contextmanager
def studio_page(sync_playwright, url):
    """The studio open in headless Chromium at 1280 px, closed afterwards."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        yield page
        browser.close()


def test_two_modes_side_by_side_in_chromium(sync_playwright, url):
    from playwright.sync_api import expect

    with studio_page(sync_playwright, url) as page:
        modes = page.locator("#modes")
        for mode in app.MODES:  # start from nothing selected, then pick the two
            box = modes.get_by_role("checkbox", name=mode, exact=False).first
            if box.is_checked():
                box.uncheck()
        for mode in MODES:
            modes.get_by_role("checkbox", name=mode, exact=True).check()
        page.get_by_label("max new tokens", exact=False).first.fill(str(NEW_TOKENS))
        page.get_by_label("max new tokens", exact=False).first.press("Enter")
        page.get_by_label("Prompt").fill(PROMPT)
        page.get_by_role("button", name="Generate").click()

        import re

        if ANSWER:  # a real model ends at its answer: the baseline's is the stored one, every pane has one
            expect(page.locator("#pane-baseline .pane-text")).to_contain_text(ANSWER)
            for mode in MODES:
                expect(page.locator(f"#pane-{app._slug(mode)} .pane-text")).to_contain_text(re.compile(r"\S"))
        else:
            for mode in MODES:
                expect(page.locator(f"#stats-{app._slug(mode)}")).to_contain_text(f"{NEW_TOKENS} tokens")
                text = page.locator(f"#pane-{app._slug(mode)} .pane-text").inner_text()
                assert len(text.strip()) > 0, f"{mode} pane is empty"
        for mode in app.MODES:
            if mode not in MODES:
                expect(page.locator(f"#pane-{app._slug(mode)}")).to_be_hidden()
        # the KV plot draws one current and one peak line per mode; the pyramid one heatmap per mode
        expect(page.locator("#kv-plot .scatterlayer .trace")).to_have_count(2 * len(MODES))
        expect(page.locator("#pyramid-plot .hm")).to_have_count(len(MODES))
        expect(page.locator("#kv-plot .legendtext").first).to_be_visible()
        expect(page.locator("#pyramid-plot").get_by_text(visual.pyramid.HELD_KEY)).to_be_visible()  # held/dropped
        expect(page.locator("#kept-words .kept-panel")).to_have_count(2)
        assert_no_error_badge(page)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        # each tab's figures while it is open (a hidden tab's texts have no size)
        for open_tab in (lambda: {name: page.locator(name) for name in ("#pyramid-plot", "#kv-plot")},
                         lambda: open_attention(page), lambda: {"#recency-plot": open_recency(page)}):
            for name, plot in open_tab().items():
                assert_no_overlap(plot, name)
                assert_panels_titled(plot, name)
        assert_no_error_badge(page)
    assert SCREENSHOT.stat().st_size > 10_000


def open_attention(page) -> dict:
    """The attention tab's two figures (of one mode at a time: their titles name the step, the layer and
    the head, never the mode)."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Attention").click()
    figures = {}
    for label in ("Attention, every layer", "Attention, one layer"):
        block = page.locator(".block", has=page.get_by_text(label, exact=True)).filter(has=page.locator(".js-plotly-plot"))
        expect(block).to_have_count(1)
        # the shown mode's last step: the tiny model runs every step; a real one stops at its answer
        step = str(NEW_TOKENS - 1) if ANSWER is None else r"\d+"
        expect(block.locator(".gtitle")).to_contain_text(re.compile(rf"Attention of the token at step {step}\b"))
        figures[label] = block
    return figures


def open_recency(page):
    """The recency figure of the prompt, with the heads the (test's) adapter replaces marked and keyed."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Recency (RecurFormer)").click()
    page.get_by_role("button", name="Compute recency scores", exact=False).click()
    plot = page.locator("#recency-plot")
    expect(plot.locator(".gtitle")).to_contain_text("Recency:")
    expect(plot.locator(".cbtitle")).to_contain_text(visual.recency.SCORE_TITLE)  # the colour key
    if "PYRAMID_MODEL" not in os.environ:  # the tiny model's own adapter replaces a group: its key is shown
        expect(plot.locator(".legendtext")).to_have_text([visual.recency.REPLACED_NAME])
    return plot


def test_bad_inputs_get_one_message_in_the_page_and_no_error_badge(sync_playwright, url):
    """Issue 18: an empty prompt, then max new tokens past the model's context, each get one sentence in
    the page's message box (the second replacing the first), never Gradio's "Error" badge over the
    outputs or an error pop-up; the model picker offers its models and the chat template switch is on."""
    from playwright.sync_api import expect

    from studio.context import fit_to_context
    from studio.model_cache import get_model
    from studio.picker import PICKER
    from studio.request import MAX_NEW_TOKENS

    lm = get_model(app.DEFAULT_MODEL)
    prompt = prompt_near_context(lm, room=4)
    fitted, notice = fit_to_context(lm, prompt, MAX_NEW_TOKENS, chat=True)
    assert notice and fitted < MAX_NEW_TOKENS, "the prompt leaves the slider's end inside the context"
    with studio_page(sync_playwright, url) as page:
        page.get_by_role("combobox", name="Model", exact=True).click()
        offered = page.get_by_role("option").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
        assert offered == list(PICKER.values())
        page.keyboard.press("Escape")
        expect(page.get_by_role("checkbox", name="Chat template")).to_be_checked()
        modes = page.locator("#modes")
        for mode in app.MODES:  # one mode: the run past the context is only the setting for a message
            modes.get_by_role("checkbox", name=mode, exact=True).set_checked(mode == "baseline")

        page.get_by_label("Prompt").fill("")
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#message .run-error")).to_contain_text("The prompt is empty")
        expect(page.locator(".run-note")).to_have_count(1)
        assert_no_error_badge(page)

        page.get_by_label("max new tokens", exact=False).first.fill(str(MAX_NEW_TOKENS))
        page.get_by_label("max new tokens", exact=False).first.press("Enter")
        page.get_by_label("Prompt").fill(prompt)
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#stats-baseline")).to_contain_text(f"{fitted} tokens")
        expect(page.locator("#message .run-notice")).to_have_text(f"ℹ️ {notice}")
        expect(page.locator(".run-note")).to_have_count(1)
        assert_no_error_badge(page)


def prompt_near_context(lm, room: int) -> str:
    """Words until the prompt leaves between `room` and a word's tokens more of the model's context."""
    from pyramid_core.pipeline import encode_prompt

    words, vocabulary = [], PROMPT.split()
    while True:
        longer = words + [vocabulary[len(words) % len(vocabulary)]]
        if encode_prompt(lm, " ".join(longer), chat=True).shape[1] > lm.max_context - room:
            return " ".join(words)
        words = longer


def test_the_badge_check_sees_gradios_error_badge(sync_playwright):
    """assert_no_error_badge fails on a page where an event failed the ordinary Gradio way (a gr.Error
    and the default progress display): else the two tests above could pass with badges shown."""
    import gradio as gr

    def fail(text):
        raise gr.Error("the ordinary way")

    with gr.Blocks() as demo:
        box, out, button = gr.Textbox(label="in"), gr.Textbox(label="out", elem_id="out"), gr.Button("Fail now")
        button.click(fail, box, out)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            assert_no_error_badge(page)  # nothing has failed yet
            page.get_by_role("button", name="Fail now", exact=True).click()
            page.locator("[data-testid=toast-body].error").wait_for(timeout=TIMEOUT_MS)
            with pytest.raises(AssertionError, match="out"):
                assert_no_error_badge(page)
            browser.close()
    finally:
        served.close(demo)
