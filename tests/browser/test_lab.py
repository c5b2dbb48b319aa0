"""The whole product in a real browser: JupyterLab served by a real `jupyter lab` process, opened in
headless Debian chromium through Playwright, ghost text from the real backend, accepted with Tab,
and the accept recorded in the feedback store that personalization learns from."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


def _notebook(path: Path) -> None:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Sums"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": []},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture
def lab(tmp_path, tiny_model, start_lab):
    """A `jupyter lab` process with the extension, configured for the tiny model."""
    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "demo.ipynb")
    args = [f"--SpecgenExtension.model={tiny_model}", "--SpecgenExtension.max_tokens=12", "--SpecgenExtension.temperature=1.0",
            f"--SpecgenExtension.feedback_path={tmp_path / 'feedback.sqlite'}",
            f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}"]
    return start_lab(root, args), tmp_path / "feedback.sqlite"


def _as_shown(text: str) -> str:
    """``text`` as CodeMirror draws it in the editor: control characters (the random model writes
    some) as their Unicode control pictures."""
    return "".join(chr(0x2400 + ord(c)) if ord(c) < 0x20 and c not in "\n\t" else c for c in text)


def _accepted_rows(path: Path, timeout: float = 20.0) -> list[tuple]:
    """The feedback store's accepted rows, once it has any (the browser reports fire-and-forget)."""
    deadline = time.monotonic() + timeout
    while True:
        db = sqlite3.connect(path)
        try:
            rows = db.execute("SELECT notebook, prefix, suggestion FROM feedback WHERE accepted = 1").fetchall()
        finally:
            db.close()
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_ghost_text_is_shown_and_tab_accepts_it(lab, browser, artifacts):
    """Typing in a cell shows ghost text from the backend; Tab puts it into the cell and the accept
    is stored as feedback."""
    from playwright.sync_api import expect

    lab, feedback = lab
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(lab.url("lab/tree/demo.ipynb"))
    status = page.locator(".jp-specgen-status")
    expect(status).to_contain_text(re.compile("ready|tiny", re.I), timeout=120_000)
    editor = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content")
    editor.click()
    page.keyboard.type("total = 0\nfor value in ", delay=30)
    ghost = page.locator(".jp-GhostText")
    expect(ghost).not_to_be_empty(timeout=60_000)
    suggestion = ghost.first.inner_text()
    page.screenshot(path=str(artifacts / "ghost-text.png"))
    page.keyboard.press("Tab")
    expect(ghost).to_have_count(0, timeout=10_000)
    text = editor.inner_text().replace("\u00a0", " ")
    page.screenshot(path=str(artifacts / "accepted.png"))
    first_line = suggestion.splitlines()[0].strip()
    assert "for value in " in text
    assert first_line and _as_shown(first_line) in text, (suggestion, text)
    rows = _accepted_rows(feedback)
    assert len(rows) == 1, f"the accepted suggestion was not reported to POST specgen/feedback once: {rows}"
    notebook, prefix, stored = rows[0]
    assert notebook == "demo.ipynb" and prefix.endswith("for value in ")
    # The whole suggestion that Tab inserted (the ghost text above may be a streamed part of it).
    assert stored.startswith(first_line) and _as_shown(stored.splitlines()[0].strip()) in text, (stored, text)
