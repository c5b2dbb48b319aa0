"""The whole product in a real browser: JupyterLab served by a real `jupyter lab` process, opened in
headless Debian chromium through Playwright, suggestions from the real backend (a tiny model
trained to write known continuations, see conftest.sums_model) validated in a fork of the real
kernel. Only what ran reaches the screen, every item that did is in JupyterLab's own list (its
N-of-M widget and Alt+] / Alt+[ cycle them), Tab inserts the one on screen and that one is
recorded in the feedback store; when every candidate raises, nothing is shown and the status bar
says why."""

from __future__ import annotations

import codeop
import json
import re
import time
from pathlib import Path

import pytest

from .conftest import RATIO_RAISE, SUMS_NUMBERS, SUMS_RAISE, feedback_rows, lab_settings

# Each test starts its own `jupyter lab` and backend, and the model fixture trains first, on a
# shared 2-core machine: longer than the suite's 300 s default.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

# JupyterLab's default keys for the inline completer (completer-extension's inline-completer.json).
NEXT_KEY = "Alt+BracketRight"
PREVIOUS_KEY = "Alt+BracketLeft"


def _notebook(path: Path) -> None:
    cells = [
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": [SUMS_NUMBERS]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": []},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture
def lab(tmp_path, sums_model, start_lab):
    """A `jupyter lab` process with the extension and the sums model, 8 candidates per request, and
    the inline completer's widget always shown (its N-of-M counter is what the tests read)."""
    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "demo.ipynb")
    lab_settings(tmp_path / "settings", "@jupyterlab/completer-extension:inline-completer", {"showWidget": "always"})
    args = [f"--SpecgenExtension.model={sums_model}", "--SpecgenExtension.max_tokens=12",
            "--SpecgenExtension.temperature=1.0", "--SpecgenExtension.candidates=8",
            f"--SpecgenExtension.feedback_path={tmp_path / 'feedback.sqlite'}",
            f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}"]
    return start_lab(root, args), tmp_path / "feedback.sqlite"


# Records every text drawn as ghost text, with the text typed on its line before it, and every
# text of the status bar item, from the moment the page loads: what shows for a few milliseconds
# is caught too.
GHOST_RECORDER = """
window.__specgenGhosts = [];
window.__specgenStatus = [];
new MutationObserver(() => {
  for (const ghost of document.querySelectorAll('.jp-GhostText')) {
    const line = ghost.closest('.cm-line');
    const text = ghost.textContent;
    const typed = line ? line.textContent.slice(0, line.textContent.length - text.length) : '';
    const last = window.__specgenGhosts[window.__specgenGhosts.length - 1];
    if (!last || last[0] !== typed || last[1] !== text) {
      window.__specgenGhosts.push([typed, text]);
    }
  }
  const status = document.querySelector('.jp-specgen-status');
  const said = status ? status.textContent : '';
  if (said && window.__specgenStatus[window.__specgenStatus.length - 1] !== said) {
    window.__specgenStatus.push(said);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def _runs(line: str) -> bool:
    """Whether ``line`` runs below the notebook's first cell (in this process)."""
    try:
        exec(compile(f"{SUMS_NUMBERS}\n{line}", "<suggestion>", "exec"), {})
    except Exception:  # noqa: BLE001 - any error means it should not have been shown
        return False
    return True


def _ghosts(page) -> list[tuple[str, str]]:
    """(text typed on the line, ghost text) for every ghost text drawn so far, non-blank ones."""
    return [(typed.replace("\u00a0", " "), text) for typed, text in page.evaluate("window.__specgenGhosts")
            if text.strip()]


def _accepted_rows(path: Path, timeout: float = 20.0) -> list[tuple]:
    """The feedback store's accepted rows, once it has any (the browser reports fire-and-forget)."""
    return feedback_rows(path, "SELECT notebook, prefix, suggestion FROM feedback WHERE accepted = 1", timeout=timeout)


def _open_with_numbers(lab, browser, *, on_websocket=None):
    """The notebook open, the backend ready, its first cell run (so candidates can use
    ``numbers``), the cursor in the empty second cell; returns (page, second cell's editor)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 720})
    if on_websocket:
        page.on("websocket", on_websocket)
    page.add_init_script(GHOST_RECORDER)
    page.goto(lab.url("lab/tree/demo.ipynb"))
    expect(page.locator(".jp-specgen-status")).to_contain_text(re.compile("ready|sums", re.I), timeout=120_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    # The backend can be ready before the notebook's kernel is: a Shift+Enter while the kernel
    # still starts was once lost (the cell never ran), so wait for JupyterLab to call it idle.
    expect(page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first).to_be_attached(timeout=120_000)
    cells.nth(0).locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    expect(cells.nth(0).locator(".jp-InputPrompt")).to_contain_text("[1]", timeout=120_000)
    editor = cells.nth(1).locator(".cm-content")
    editor.click()
    return page, editor


def _ghost(page) -> str:
    return page.locator(".jp-GhostText").first.inner_text().strip()


def test_validated_suggestions_cycle_with_jupyterlabs_keys_and_tab_takes_the_one_shown(lab, browser, artifacts):
    """Several candidates that ran reach JupyterLab as separate items (N-of-M with M ≥ 2); Alt+] and
    Alt+[ cycle them; every ghost text shown runs; Tab inserts the item on screen and that item,
    not item 0, is stored as accepted feedback."""
    from playwright.sync_api import expect

    lab, feedback = lab
    page, editor = _open_with_numbers(lab, browser)
    page.keyboard.type("total = ", delay=30)
    ghost = page.locator(".jp-GhostText")
    expect(ghost).not_to_be_empty(timeout=60_000)
    completer = page.locator(".jp-InlineCompleter").filter(visible=True)
    counter = completer.locator("> div").first
    # The list grows as more candidates hold up; M ≥ 2 once a second one did.
    expect(counter).to_have_text(re.compile(r"^\d+/([2-9]|\d\d+)$"), timeout=60_000)
    expect(page.locator(".jp-specgen-status")).to_contain_text("✓ ran", timeout=30_000)
    said = page.evaluate("window.__specgenStatus")
    assert any(re.search(r"generating…|validating \d+/\d+", t) for t in said), said
    page.wait_for_timeout(2_000)  # let `done` settle the ranked list before cycling
    index, count = map(int, counter.inner_text().split("/"))
    assert count >= 2

    seen = []
    for _ in range(count):
        text = _ghost(page)
        assert _runs(f"total = {text}"), f"shown but does not run: {text!r}"
        seen.append(text)
        page.keyboard.press(NEXT_KEY)
        index = index % count + 1
        expect(counter).to_have_text(f"{index}/{count}")
    assert len(set(seen)) == count, f"duplicate items in the list: {seen}"
    page.screenshot(path=str(artifacts / "ghost-text-cycle.png"))

    page.keyboard.press(NEXT_KEY)
    page.keyboard.press(PREVIOUS_KEY)  # back where it was: Alt+[ goes the other way
    expect(counter).to_have_text(f"{index}/{count}")
    page.keyboard.press(NEXT_KEY)  # a later item than the first: feedback must name this one
    index = index % count + 1
    expect(counter).to_have_text(f"{index}/{count}")
    chosen = _ghost(page)
    drawn = _ghosts(page)
    assert drawn and all(_runs(typed + text) for typed, text in drawn), f"drawn, not all run: {drawn}"
    assert not any(text.strip() == SUMS_RAISE for _, text in drawn), drawn
    page.keyboard.press("Tab")
    expect(ghost).to_have_count(0, timeout=10_000)
    text = editor.inner_text().replace("\u00a0", " ")
    page.screenshot(path=str(artifacts / "accepted.png"))
    assert f"total = {chosen}" in text, (chosen, text)
    rows = _accepted_rows(feedback)
    assert len(rows) == 1, f"the accepted suggestion was not reported to POST specgen/feedback once: {rows}"
    notebook, prefix, stored = rows[0]
    assert notebook == "demo.ipynb" and prefix.endswith("total = ")
    assert stored.strip() == chosen, (stored, chosen)


def test_when_every_candidate_raises_nothing_is_shown_and_the_status_bar_says_why(lab, browser, artifacts):
    """Candidates that raise (ZeroDivisionError) are never drawn as ghost text, not even for a
    moment, nor left as an empty item in JupyterLab's list; the status bar says "no suggestion:
    N candidates raised …" and, in its tooltip, what they raised."""
    from playwright.sync_api import expect

    lab, _ = lab
    page, _ = _open_with_numbers(lab, browser)
    status = page.locator(".jp-specgen-status")
    page.keyboard.type("ratio = ", delay=30)
    expect(status).to_contain_text("no suggestion", timeout=90_000)
    said = status.inner_text()
    page.screenshot(path=str(artifacts / "no-suggestion.png"))
    drawn = _ghosts(page)
    assert all(_runs(typed + text) for typed, text in drawn), f"drawn, not all run: {drawn}"
    assert not any(typed.startswith("ratio =") for typed, _ in drawn), f"{RATIO_RAISE!r} raises, yet: {drawn}"
    # No empty placeholder either: JupyterLab's widget (always shown when it has items) is hidden.
    assert page.locator(".jp-InlineCompleter").filter(visible=True).count() == 0
    assert re.search(r"^specgen: no suggestion: \d+ candidates? raised", said), said
    assert "ZeroDivisionError" in (status.get_attribute("title") or ""), status.get_attribute("title")
    assert status.get_attribute("data-state") == "none"
    assert "✓" not in said


def test_an_unfinished_block_header_is_shown_marked_incomplete(lab, browser, artifacts):
    """`for value in ` completed to an unfinished statement (the block's body is yet to be
    written) is shown, and the status bar marks it "◐ incomplete", not "✓ ran"."""
    from playwright.sync_api import expect

    lab, _ = lab
    page, _ = _open_with_numbers(lab, browser)
    page.keyboard.type("for value in ", delay=30)
    expect(page.locator(".jp-GhostText")).not_to_be_empty(timeout=60_000)
    status = page.locator(".jp-specgen-status")
    expect(status).to_contain_text("◐ incomplete", timeout=30_000)
    text = _ghost(page)
    page.screenshot(path=str(artifacts / "incomplete.png"))
    # What is on screen is an unfinished statement in codeop's sense (the model was taught
    # `numbers:`; a sample may also stop inside an open bracket, which is unfinished too).
    assert codeop.compile_command(f"{SUMS_NUMBERS}\nfor value in {text}", symbol="exec") is None, text
    assert "✓" not in status.inner_text()


def test_stream_unvalidated_setting_shows_raw_text_before_validation(tmp_path, sums_model, start_lab, browser, artifacts):
    """With the provider setting `streamUnvalidated` on, the request asks for raw chunks and their
    text is drawn as ghost text before validation (here `1 / 0` and what the model writes after
    it); once validation is done only what held up stays: nothing ("no suggestion": `1 / 0`
    raised), or a cut of it that ran (a rung such as `1`, when the model's tail did not parse)."""
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "demo.ipynb")
    lab_settings(tmp_path / "settings", "@jupyterlab/completer-extension:inline-completer",
                 {"showWidget": "always", "providers": {"specgen": {"streamUnvalidated": True}}})
    lab = start_lab(root, [f"--SpecgenExtension.model={sums_model}", "--SpecgenExtension.max_tokens=12",
                           "--SpecgenExtension.temperature=1.0", "--SpecgenExtension.candidates=4",
                           f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}"], log_name="lab-stream.log")
    sent: list[dict] = []
    received: list[dict] = []

    def watch(ws):
        if "specgen/ws" in ws.url:
            ws.on("framesent", lambda payload: sent.append(json.loads(payload)))
            ws.on("framereceived", lambda payload: received.append(json.loads(payload)))

    page, _ = _open_with_numbers(lab, browser, on_websocket=watch)
    status = page.locator(".jp-specgen-status")
    page.keyboard.type("ratio = ", delay=30)
    expect(status).to_contain_text(re.compile("no suggestion|✓ ran"), timeout=90_000)
    page.screenshot(path=str(artifacts / "stream-unvalidated.png"))
    completes = [m for m in sent if m.get("type") == "complete"]
    assert completes and all(m.get("stream") is True for m in completes), completes
    chunks = [m for m in received if m.get("type") == "chunk"]
    assert chunks, "no raw chunk came"
    raw = [text for typed, text in _ghosts(page) if typed.startswith("ratio =")]
    assert raw, "the raw text was never drawn"
    # Validation then kept only what held up: what stays on screen is a validated item's text.
    done = [m for m in received if m.get("type") == "done" and m.get("reply_to") == completes[-1]["id"]]
    validated = {item["text"].strip() for m in done for item in m["items"] if item["verdict"] == "ran"}
    assert "1 / 0" not in validated  # it raised
    for ghost in page.locator(".jp-GhostText").all_inner_texts():
        assert not ghost.strip() or ghost.strip() in validated, (ghost, validated)


def test_no_sandbox_on_the_system_is_said_once_and_marked_on_the_status_bar(tmp_path, sums_model, start_lab, browser, artifacts):
    """On a system where the OS fence cannot be built (here libseccomp's bindings cannot be
    imported in the kernel), suggestions come marked "not validated", and the page says "no
    sandbox on this system" once (one notification) and keeps a marker on the status bar."""
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "demo.ipynb")
    # What a machine without libseccomp looks like to the kernel: the bindings fail to import.
    shadow = tmp_path / "no-seccomp"
    shadow.mkdir()
    (shadow / "pyseccomp.py").write_text('raise ImportError("libseccomp.so.2: cannot open shared object file")\n')
    lab = start_lab(root, [f"--SpecgenExtension.model={sums_model}", "--SpecgenExtension.max_tokens=12",
                           "--SpecgenExtension.temperature=1.0", "--SpecgenExtension.candidates=4",
                           f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}"],
                    env={"PYTHONPATH": str(shadow)}, log_name="lab-no-sandbox.log")
    page, editor = _open_with_numbers(lab, browser)
    status = page.locator(".jp-specgen-status")
    page.keyboard.type("total = ", delay=30)
    expect(page.locator(".jp-GhostText")).not_to_be_empty(timeout=60_000)
    expect(status).to_contain_text("not validated: no sandbox on this system", timeout=30_000)
    expect(status).to_contain_text("⚠ no sandbox")
    toasts = page.locator(".Toastify__toast").filter(has_text="no sandbox on this system")
    expect(toasts).to_have_count(1, timeout=10_000)
    page.screenshot(path=str(artifacts / "no-sandbox.png"))
    # More requests: still one notification, the marker stays.
    page.keyboard.press("Escape")
    editor.click()
    page.keyboard.press("End")
    page.keyboard.type(" + 1", delay=30)
    page.wait_for_timeout(5_000)
    expect(status).to_contain_text("⚠ no sandbox")
    assert toasts.count() == 1
    assert status.get_attribute("data-sandbox") == "missing"
