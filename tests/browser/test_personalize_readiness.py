"""The personalize panel before any job, in a real JupyterLab page: every count explained in words, each
example with its reason; with one notebook "Start training" disabled with the reason and what to do;
with two, enabled, and the estimate of how long it would take shown. `lab?specgen=personalize` opens it."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def _notebook(path, name):
    cells = [new_code_cell(f"{name}_{i} = sorted(range({i + 4}))", execution_count=i + 1) for i in range(3)]
    nbformat.write(new_notebook(cells=cells), str(path))


def test_start_is_refused_with_one_notebook_and_estimated_with_two(tmp_path, tiny_model, start_lab, browser, artifacts):
    """One notebook: the refusal is shown and Start is disabled; a second notebook and Refresh: Start is
    enabled and the estimate says "Training would take …"."""
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "only.ipynb", "only")
    lab = start_lab(root, [f"--SpecgenExtension.model={tiny_model}",
                           f"--SpecgenExtension.feedback_path={tmp_path / 'feedback.sqlite'}",
                           f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}"])
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    # The VS Code extension's "Personalize my completions" opens this URL: the panel opens by itself
    # (a fresh workspace, where it was never open before).
    page.goto(lab.url("lab") + "&specgen=personalize")
    panel = page.locator(".jp-specgen-personalize")
    expect(panel).to_be_visible(timeout=120_000)
    status = page.locator(".jp-specgen-status")
    expect(status).to_be_visible(timeout=120_000)
    status.click()  # brings the open panel to the front
    expect(panel.get_by_test_id("specgen-data-summary")).to_contain_text("training examples from", timeout=60_000)
    terms = panel.get_by_test_id("specgen-data-terms")
    expect(terms).to_contain_text("held-out examples: from notebooks kept aside, never trained on, to measure")
    expect(terms).to_contain_text("you typed over or dismissed with Escape")
    expect(terms).to_contain_text("you kept (still in the cell when it ran without error)")
    examples = panel.get_by_test_id("specgen-examples")
    examples.locator("summary").click()
    expect(examples).to_contain_text("only.ipynb, cell 1: only_0 = sorted(range(4)) (trained on; a cell you wrote")
    refusal = panel.get_by_test_id("specgen-refusal")
    expect(refusal).to_contain_text(re.compile(r"needs at least 2 notebooks .* you have 1 \(only\.ipynb\)"))
    start = panel.get_by_test_id("specgen-start")
    expect(start).to_be_disabled()
    assert "Run and save another notebook" in start.get_attribute("title")
    expect(panel.get_by_test_id("specgen-estimate")).to_be_hidden()
    panel.screenshot(path=str(artifacts / "personalize-refused.png"))

    _notebook(root / "second.ipynb", "second")
    _notebook(root / "third.ipynb", "third")
    panel.get_by_test_id("specgen-data-refresh").click()
    estimate = panel.get_by_test_id("specgen-estimate")
    expect(estimate).to_contain_text(re.compile(r"Training would take (under a minute|about \d+ minutes?)"),
                                     timeout=60_000)
    expect(estimate).to_contain_text("training steps")
    expect(refusal).to_be_hidden()
    expect(start).to_be_enabled()
    assert int(estimate.get_attribute("data-steps")) >= 20
    panel.screenshot(path=str(artifacts / "personalize-estimate.png"))
