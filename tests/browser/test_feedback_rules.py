"""The feedback rules in a real JupyterLab page (headless chromium, the real backend and kernel): an accept
is stored pending and becomes "kept" when its cell runs with it, or "changed" when it was rewritten first;
running a cell with a suggestion on screen is not a dismissal; typing over one and Escape are."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from .test_lab import _open_with_numbers, lab  # noqa: F401 - the fixture, shared

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def _rows(path: Path) -> list[tuple]:
    """(accepted, outcome, suggestion) of every feedback row, oldest first."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT accepted, outcome, suggestion FROM feedback ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # no report yet
        return []
    finally:
        db.close()


def _until(path: Path, predicate, timeout: float = 30.0) -> list[tuple]:
    """The rows once ``predicate(rows)`` holds (reports are fire-and-forget); the last rows seen otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(path)
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _accepts(rows) -> list[str]:
    return [outcome for accepted, outcome, _ in rows if accepted]


def _dismissals(rows) -> int:
    return sum(not accepted for accepted, _, _ in rows)


def test_kept_changed_and_only_typed_over_or_escaped_dismisses(lab, browser, artifacts):  # noqa: F811
    """Tab then run: kept. Tab, rewrite, run: changed. Run with ghost text shown: no dismissal. Type over,
    Escape: one dismissal each."""
    from playwright.sync_api import expect

    lab, feedback = lab
    page, editor = _open_with_numbers(lab, browser)
    ghost = page.locator(".jp-GhostText").first  # the ghost text may be drawn in several spans
    cells = page.locator(".jp-Notebook .jp-Cell")

    def suggestion_shown(again: bool = True) -> int:
        """Type `total = ` in the second cell (emptied first when ``again``), wait for its ghost text;
        the dismissals counted by then.

        Always the second cell: the sums model learnt its continuations below the first cell alone.
        Typed key by key, as a person does: a ghost text drawn for half the prefix and typed over is a
        real dismissal, so each step compares the count before and after its own action."""
        if again:
            cells.nth(1).locator(".cm-content").click()
            page.keyboard.press("Control+a")
            page.keyboard.press("Backspace")
        page.keyboard.type("total = ", delay=30)
        expect(ghost).not_to_be_empty(timeout=60_000)
        page.wait_for_timeout(2_000)  # reports of the keystrokes before are fire-and-forget
        return _dismissals(_rows(feedback))

    # 1. Tab, then the cell runs with the suggestion in it: pending, then kept.
    suggestion_shown(again=False)
    page.keyboard.press("Tab")
    rows = _until(feedback, lambda r: len(_accepts(r)) == 1)
    assert _accepts(rows) == ["pending"], rows
    page.keyboard.press("Shift+Enter")
    rows = _until(feedback, lambda r: _accepts(r) != ["pending"])
    assert _accepts(rows) == ["kept"], rows

    # 2. Tab, then the cell rewritten before the run: changed, never an example (the accept of step 1 was
    #    decided by its run: emptying its cell now changes nothing).
    suggestion_shown()
    page.keyboard.press("Tab")
    _until(feedback, lambda r: len(_accepts(r)) == 2)
    page.keyboard.press("Control+a")
    page.keyboard.press("0")
    page.keyboard.press("Shift+Enter")
    rows = _until(feedback, lambda r: _accepts(r)[1:] not in ([], ["pending"]))
    assert _accepts(rows) == ["kept", "changed"], rows

    # 3. Running a cell while a suggestion shows is not a dismissal.
    before = suggestion_shown()
    page.keyboard.press("Shift+Enter")
    page.wait_for_timeout(3_000)
    assert _dismissals(_rows(feedback)) == before

    # 4. Typing text that diverges from the ghost text is one; Escape is another.
    before = suggestion_shown()
    shown = ghost.inner_text()
    page.keyboard.press("(" if not shown.startswith("(") else "[")
    rows = _until(feedback, lambda r: _dismissals(r) > before)
    assert _dismissals(rows) == before + 1, rows
    page.keyboard.press("Backspace")
    expect(ghost).not_to_be_empty(timeout=60_000)
    page.wait_for_timeout(2_000)
    before = _dismissals(_rows(feedback))
    page.keyboard.press("Escape")
    rows = _until(feedback, lambda r: _dismissals(r) > before)
    assert _dismissals(rows) == before + 1, rows
    assert _accepts(rows) == ["kept", "changed"], rows  # nothing else became an accept
    page.screenshot(path=str(artifacts / "feedback-rules.png"))
