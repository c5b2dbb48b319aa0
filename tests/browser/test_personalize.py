"""The "Personalize my completions" panel in a real JupyterLab page (headless Debian chromium):
what the data is, a job started from the button with its progress, the before/after chart with
the executable rates measured on the Jupyter side, and the published version in use."""

from __future__ import annotations

import re
import shutil

import pytest

# The pandas base fixture trains 400 full-parameter steps before the lab starts, and the job
# trains again: far longer than the suite's 300 s default on a shared 2-core machine.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(2400)]


@pytest.fixture
def lab(tmp_path, alice_root, pandas_base, start_lab):
    """`jupyter lab` over a copy of alice's notebooks, adapters and feedback kept in the test's folder."""
    root = tmp_path / "root"
    shutil.copytree(alice_root, root)
    args = [f"--SpecgenExtension.model={pandas_base.path}", "--SpecgenExtension.personalize_steps=60",
            f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}",
            f"--SpecgenExtension.feedback_path={tmp_path / 'feedback.sqlite'}",
            "--SpecgenExtension.max_tokens=24", "--SpecgenExtension.temperature=0"]
    return start_lab(root, args, log_name="lab-personalize.log")


def test_panel_trains_publishes_and_shows_the_chart(lab, browser, artifacts):
    """Open from the status bar, see the data, train, follow progress, see the chart and v1 in use."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(lab.url("lab"))
    status = page.locator(".jp-specgen-status")
    expect(status).to_contain_text(re.compile("ready|pandas", re.I), timeout=120_000)
    status.click()

    panel = page.locator(".jp-specgen-personalize")
    summary = panel.get_by_test_id("specgen-data-summary")
    expect(summary).to_contain_text("training examples from", timeout=60_000)
    assert int(summary.get_attribute("data-train")) > 20
    expect(panel.get_by_test_id("specgen-notebooks-heldout")).to_contain_text("analysis_")

    panel.get_by_test_id("specgen-start").click()
    phase = panel.get_by_test_id("specgen-phase")
    expect(phase).to_contain_text(re.compile(r"Training: step \d+/60"), timeout=120_000)
    expect(panel.get_by_test_id("specgen-progress")).to_be_visible()
    page.screenshot(path=str(artifacts / "personalize-training.png"))

    verdict = panel.get_by_test_id("specgen-verdict")
    expect(verdict).to_contain_text("Published v1", timeout=600_000)
    expect(panel.get_by_test_id("specgen-plot")).to_be_visible()
    title = panel.locator("[data-testid=specgen-plot] title").first.text_content()
    assert re.search(r"executable rate \d\.\d\d → \d\.\d\d", title), title  # measured, not "n/a"
    expect(panel.locator(".jp-specgen-personalize-version.jp-mod-current")).to_contain_text("v1")
    expect(panel.get_by_test_id("specgen-start")).to_be_enabled()
    expect(panel.get_by_test_id("specgen-cancel")).to_be_hidden()
    expect(panel.get_by_test_id("specgen-progress")).to_be_hidden()
    page.set_viewport_size({"width": 1280, "height": 1500})  # the whole panel in one picture
    panel.screenshot(path=str(artifacts / "personalize-panel.png"))

