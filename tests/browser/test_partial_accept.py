"""Partial accept in a real browser (JupyterLab in headless chromium, the real backend and kernel):
Ctrl+→ takes the next word of the suggestion on screen and Ctrl+Shift+→ the rest of its line,
what remains stays shown as ghost text, each part taken is reported to ``POST specgen/feedback``
as a partial accept, and without ghost text the two keys move and select by word as before. Also
the looks: a long suggestion wraps inside the editor instead of running under the cell toolbar,
and ghost text is upright, unlike a comment."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from .conftest import SUMS_NUMBERS, feedback_rows, lab_settings, taught_model

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

# What the model below is taught to write in an empty cell below `numbers = [3, 1, 2]` (asked for
# with JupyterLab's Alt+\\, as nothing is asked for at the start of a line). Greedy, it writes a
# first line of that shape (`total = sum(numbers) + len(numbers) + ...`, too long for a narrow
# editor), and the tests take what is drawn rather than assume it word for word.
TAUGHT = "total = sum(numbers) + max(numbers) + min(numbers) + len(numbers)\nprint(total)"
# A cell with code in it from the start (a comment too, to compare with ghost text), where
# nothing is ever asked for.
WRITTEN = "total = len(numbers)  # how many"

INVOKE_KEY = "Alt+Backslash"  # JupyterLab's inline-completer:invoke
WORD_KEY = "Control+ArrowRight"
LINE_KEY = "Control+Shift+ArrowRight"


@pytest.fixture(scope="session")
def partial_model(tiny_model, tmp_path_factory) -> str:
    """The tiny random model after learning the suggestion above (as conftest.sums_model is
    made), saved as a local model folder."""
    from jupyter_specgen.kernel.specs import describe
    from jupyter_specgen.prompt_specs import spec_block
    from specgen_backend.training.examples import TrainingExample
    from specgen_backend.training.train import load_base

    base = load_base(tiny_model)
    cells = [{"cell_type": "code", "source": SUMS_NUMBERS}]
    examples = [TrainingExample(notebook="partial", cells_before=cells, spec=spec, prefix="", target=TAUGHT)
                for spec in ("", spec_block([describe([3, 1, 2], "numbers")]))]
    return taught_model(base, examples * 2, steps=220, folder=tmp_path_factory.mktemp("partial-model"))


@pytest.fixture
def lab(tmp_path, partial_model, start_lab):
    """`jupyter lab` with the extension and the model above, greedy, one candidate; a notebook
    whose first cell defines ``numbers``, an empty one and one with code; returns (lab, feedback
    store path)."""
    root = tmp_path / "root"
    root.mkdir()
    empty = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": []}
    cells = [{**empty, "source": [SUMS_NUMBERS]}, dict(empty), {**empty, "source": [WRITTEN]}]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / "demo.ipynb").write_text(json.dumps(nb))
    # A busy machine can take more than the provider's default 15 s for a 48-token answer.
    lab_settings(tmp_path / "settings", "@jupyterlab/completer-extension:inline-completer",
                 {"showWidget": "always", "providers": {"specgen": {"timeout": 90_000}}})
    feedback = tmp_path / "feedback.sqlite"
    # No cursor constraint: at the start of a line it holds the first token to the kernel's names
    # (`numbers`), which the tiny model was not taught to continue from.
    args = [f"--SpecgenExtension.model={partial_model}", "--SpecgenExtension.max_tokens=48",
            "--SpecgenExtension.temperature=0", "--SpecgenExtension.candidates=1", "--SpecgenExtension.constrain=False",
            f"--SpecgenExtension.feedback_path={feedback}", f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}"]
    return start_lab(root, args, log_name="lab-partial.log"), feedback


def next_word(text: str) -> str:
    """What Ctrl+→ takes (completions/partial.ts `nextWord`, restated): spaces, then a word or a
    run of punctuation; a line break with the next line's indentation on its own."""
    m = re.match(r"[ \t]*(\r?\n[ \t]*|\w+|[^\w\s]+)?", text)
    return m.group(0) or text[:1]


def next_line(text: str) -> str:
    """What Ctrl+Shift+→ takes (`nextLine`): the rest of the line; at its end, the break and the next line."""
    start = 1 if text.startswith("\n") else 0
    end = text.find("\n", start)
    return text if end < 0 else text[:end]


def _cell_text(cell) -> str:
    """The cell's text, without the ghost text drawn in it."""
    return cell.locator(".cm-content").evaluate("""node => {
        const copy = node.cloneNode(true);
        copy.querySelectorAll('.jp-GhostText').forEach(ghost => ghost.remove());
        return Array.from(copy.querySelectorAll('.cm-line'), line => line.textContent).join('\\n');
    }""").replace("\u00a0", " ")


def _wait_for_text(cell, expected: str, timeout: float = 10.0) -> None:
    """Wait until the cell holds ``expected`` (ghost text aside)."""
    deadline = time.monotonic() + timeout
    while (text := _cell_text(cell)) != expected:
        assert time.monotonic() < deadline, f"the cell holds {text!r}, not {expected!r}"
        time.sleep(0.1)


def _ghost_text(page) -> str:
    """The ghost text on screen, lines past JupyterLab's `maxLines` included."""
    return page.locator(".jp-GhostText").first.evaluate("node => node.innerText").replace("\u00a0", " ").replace("⇓", "")


def _stored(path: Path, suggestion: str, timeout: float = 20.0) -> list[tuple]:
    """The feedback store's accepted rows for ``suggestion``, once there are any."""
    return feedback_rows(path, "SELECT prefix, suggestion FROM feedback WHERE accepted = 1 AND suggestion = ?",
                         (suggestion,), timeout=timeout)


def _open(lab, browser, viewport: dict):
    """The notebook open, its first cell run, the cursor in the empty second cell; (page, cells)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport=viewport)
    page.goto(lab.url("lab/tree/demo.ipynb"))
    expect(page.locator(".jp-specgen-status")).to_contain_text(re.compile("ready|partial", re.I), timeout=120_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    # The backend can be ready before the notebook's kernel is: a Shift+Enter while the kernel
    # still starts was once lost (the cell never ran), so wait for JupyterLab to call it idle.
    expect(page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first).to_be_attached(timeout=120_000)
    cells.nth(0).locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    expect(cells.nth(0).locator(".jp-InputPrompt")).to_contain_text("[1]", timeout=120_000)
    cells.nth(1).locator(".cm-content").click()
    return page, cells


def _ask_for_suggestion(page) -> str:
    """Ask JupyterLab for a suggestion (Alt+\\) and wait until one held up; its text."""
    from playwright.sync_api import expect

    page.keyboard.press(INVOKE_KEY)
    expect(page.locator(".jp-GhostText")).not_to_be_empty(timeout=120_000)
    expect(page.locator(".jp-specgen-status")).to_contain_text("✓ ran", timeout=60_000)
    return _ghost_text(page)


def test_ctrl_right_takes_a_word_ctrl_shift_right_a_line_and_the_rest_stays_shown(lab, browser, artifacts):
    """With a suggestion on screen: Ctrl+→ inserts its next word (twice: `total`, then ` =`) and the
    rest stays shown as ghost text after each; Ctrl+Shift+→ then inserts the rest of the line
    (here the rest of the suggestion: JupyterLab's own accept); each part reaches the server as a
    partial accept (POST answered 204, stored) and the last as an accept at the longer prefix;
    without ghost text Ctrl+→ moves the cursor by a word and Ctrl+Shift+→ selects one."""
    from playwright.sync_api import expect

    lab, feedback = lab
    page, cells = _open(lab, browser, {"width": 1280, "height": 720})
    posts = []  # the POSTs to specgen/feedback that got an answer (none is made before a key below)
    page.on("requestfinished", lambda request: posts.append(request)
            if request.method == "POST" and request.url.split("?")[0].endswith("/specgen/feedback") else None)
    cell = cells.nth(1)
    full = _ask_for_suggestion(page)
    assert full.startswith("total = sum(numbers) +"), f"the model was taught {TAUGHT!r}, it wrote {full!r}"
    ghost = page.locator(".jp-GhostText").first

    taken = ""
    for expected in ("total", " ="):
        word = next_word(full[len(taken):])
        assert word == expected, (word, full)
        page.keyboard.press(WORD_KEY)
        taken += word
        _wait_for_text(cell, taken)
        expect(ghost).to_have_text(full[len(taken):].strip(), timeout=10_000)  # whitespace-normalized
        assert _ghost_text(page) == full[len(taken):]
    page.screenshot(path=str(artifacts / "partial-accept-word.png"))

    rest = full[len(taken):]
    line = next_line(rest)
    page.keyboard.press(LINE_KEY)
    _wait_for_text(cell, taken + line)
    if line == rest:  # one line: all of it, as Tab would
        expect(page.locator(".jp-GhostText")).to_have_count(0, timeout=10_000)
    else:
        expect(ghost).to_have_text(rest[len(line):].strip(), timeout=10_000)
        page.keyboard.press("Tab")
        _wait_for_text(cell, full)

    # Each part reached the server: the words as partial accepts at the prefix they were typed
    # after, then the rest as an accept.
    deadline = time.monotonic() + 20
    while len(posts) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    reports = [(json.loads(r.post_data or "{}"), r.response().status) for r in posts]
    said = [(body["prefix"], body["suggestion"], bool(body.get("partial")), body["accepted"], status) for body, status in reports]
    assert said[:2] == [("", "total", True, True, 204), ("total", " =", True, True, 204)], reports
    assert said[-1] == (taken if line == rest else taken + line, rest if line == rest else rest[len(line):],
                        False, True, 204), reports
    assert _stored(feedback, "total") == [("", "total")]

    # No ghost text (a cell where nothing was typed, so nothing is asked for): the keys do what
    # CodeMirror does with them.
    written = cells.nth(2)
    written.locator(".cm-content").click()
    page.keyboard.press("Control+Home")
    where = page.get_by_role("button", name=re.compile(r"^Ln \d+, Col \d+$"))
    expect(where).to_have_text("Ln 1, Col 1")
    page.keyboard.press(WORD_KEY)
    expect(where).to_have_text("Ln 1, Col 6")  # after `total`
    page.keyboard.press(LINE_KEY)
    assert page.evaluate("window.getSelection().toString()") == " =", "Ctrl+Shift+→ did not select the next word"
    assert _cell_text(written) == WRITTEN
    assert page.locator(".jp-GhostText").count() == 0


def test_a_long_suggestion_wraps_inside_the_editor_and_does_not_look_like_code(lab, browser, artifacts):
    """In a narrow window, the suggestion's long first line is drawn on several rows inside the
    editor, none of them past its right edge or under the cell toolbar; ghost text is upright,
    so that an italic comment in the code is not mistaken for it (nor it for code)."""
    lab, _ = lab
    page, cells = _open(lab, browser, {"width": 820, "height": 600})
    cell = cells.nth(1)
    full = _ask_for_suggestion(page)
    assert len(full.split("\n")[0]) > 60, f"too short to need wrapping: {full!r}"
    page.screenshot(path=str(artifacts / "ghost-text-wrapped.png"))
    ghost = cell.locator(".jp-GhostText").first
    content = cell.locator(".cm-content").bounding_box()
    rows = ghost.evaluate("node => Array.from(node.getClientRects(), r => [r.left, r.top, r.right, r.bottom])")
    tops = sorted({round(top) for _, top, _, _ in rows})
    assert len(tops) > len(full.split("\n")), f"the long line did not wrap: {rows}"
    assert all(right <= content["x"] + content["width"] + 1 for _, _, right, _ in rows), (rows, content)
    toolbar = cell.locator(".jp-cell-toolbar")
    assert toolbar.count() == 1 and toolbar.is_visible()
    bar = toolbar.bounding_box()
    for left, top, right, bottom in rows:
        if bottom > bar["y"] and top < bar["y"] + bar["height"]:
            assert right <= bar["x"] + 1, f"ghost text under the cell toolbar: {(left, top, right, bottom)} {bar}"

    comment = cells.nth(2).locator(".cm-line span", has_text="# how many").first
    style = "node => getComputedStyle(node).fontStyle"
    assert comment.evaluate(style) == "italic"  # JupyterLab's comments
    assert ghost.evaluate(style) == "normal"
