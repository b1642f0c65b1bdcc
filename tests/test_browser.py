"""The app in a real browser (Debian's Chromium driven by Playwright): pick two modes, type a prompt,
generate, and wait for both panes and the figures; the page is saved to $SCREENSHOT (default: the
temp directory; the README's docs/screenshot.png is refreshed by setting it).

The model is a tiny local checkpoint unless PYRAMID_MODEL names another (e.g. "embedded" for a
screenshot with real words).
"""

from __future__ import annotations

import os
import tempfile
import socket
from pathlib import Path

import pytest

import app
from pyramid_core.resources import asset
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
    monkeypatch_module.setattr(app, "DEFAULT_MODEL", model)
    demo = app.build_ui()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, css=app.CSS)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


TEXTS = ".annotation-text, .gtitle, .xtitle, .ytitle, .legendtext"  # a figure's titles, labels and key


def assert_no_overlap(page, plot: str) -> None:
    """No two of a figure's titles, axis titles, panel titles or legend entries overlap on screen."""
    boxes = page.locator(f"{plot} :is({TEXTS})").evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return [e.textContent, r.left, r.top, r.right, r.bottom]; }).filter(b => b[3] > b[1])")
    assert len(boxes) >= 3, f"{plot}: too few texts found: {boxes}"
    for i, (a, *ra) in enumerate(boxes):
        for b, *rb in boxes[i + 1:]:
            apart = ra[2] <= rb[0] or rb[2] <= ra[0] or ra[3] <= rb[1] or rb[3] <= ra[1]
            assert apart, f"{plot}: {a!r} overlaps {b!r} at 1280 px"


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def test_two_modes_side_by_side_in_chromium(sync_playwright, url):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
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
        for plot in ("#pyramid-plot", "#kv-plot"):
            assert_no_overlap(page, plot)
        expect(page.locator("#kept-words .kept-panel")).to_have_count(2)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
