"""One click to a better model in a real JupyterLab page: while the embedded model serves, the status bar
offers the download; the click shows a progress bar (bytes, rate, time left); when the backend serves
the downloaded model (from a local stand-in for the Hugging Face hub) its name is on the status bar.
The personalize panel names the model and why, and shows the same offer and the same download."""

from __future__ import annotations

import re

import pytest

from ..hub_stand_in import REPO, StandInHub

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


@pytest.fixture
def lab(tmp_path, tmp_path_factory, start_lab):
    from specgen_backend.model_choice import CATALOG, fits, probe_memory
    from specgen_backend.tiny import TinyModelConfig, build_tiny_model

    if not fits(CATALOG[0], probe_memory("cpu")):
        pytest.skip("too little free RAM here for the 0.5B class: nothing would be offered")
    # Slow enough (about 12 s for the tiny model) that the progress bar is seen, in the panel too.
    hub = StandInHub(str(build_tiny_model(tmp_path_factory.mktemp("offered"), TinyModelConfig(seed=3))), pause_s=0.15)
    root = tmp_path / "root"
    root.mkdir()
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hub-cache"), "HF_HUB_OFFLINE": "0"}
    args = ["--SpecgenExtension.model=auto", f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}",
            f"--SpecgenExtension.feedback_path={tmp_path / 'feedback.sqlite'}"]
    yield start_lab(root, args, env=env, log_name="lab-model-download.log")
    hub.close()


def test_offer_click_progress_and_new_model_name(lab, browser, artifacts):
    """The offer is on the status bar; clicking it shows a progress bar; the model's name changes when done."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 700})
    page.goto(lab.url("lab"))
    status = page.locator(".jp-specgen-status")
    expect(status).to_contain_text("specgen-tiny-code", timeout=120_000)
    offer = status.locator(".jp-specgen-download-offer")
    expect(offer).to_have_text(re.compile(r"Download Qwen2\.5-Coder-0\.5B \(≈1(\.0)? GB\) for better suggestions"))
    page.screenshot(path=str(artifacts / "model-download-offer.png"))
    offer.click()
    expect(page.locator(".jp-specgen-personalize")).to_have_count(0)  # the offer's click is its own
    bar = status.locator("progress.jp-specgen-download-progress")
    expect(bar).to_be_visible(timeout=30_000)
    expect(status.locator(".jp-specgen-download-text")).to_contain_text(re.compile(r"\d+% · .* MB/s · \d+ s left"),
                                                                          timeout=30_000)
    page.screenshot(path=str(artifacts / "model-download-progress.png"))

    # The panel (a click on the item) follows the same download, and names the model and why.
    status.locator("span").first.click()
    panel = page.locator(".jp-specgen-personalize")
    expect(panel.locator("progress.jp-specgen-download-progress")).to_be_visible(timeout=30_000)
    expect(panel.locator(".jp-specgen-download-text")).to_contain_text("downloading Qwen2.5-Coder-0.5B")
    page.screenshot(path=str(artifacts / "model-download-panel.png"))

    expect(status).to_contain_text(f"specgen: {REPO}", timeout=120_000)
    expect(bar).to_have_count(0)
    expect(offer).to_have_count(0)  # the model in use is the one offered: nothing more to offer
    assert "Why this model: Qwen2.5-Coder-0.5B downloaded on request" in (status.get_attribute("title") or "")
    model = panel.get_by_test_id("specgen-model")
    expect(model).to_contain_text(f"Completions come from {REPO}")
    expect(model).to_contain_text("Why this model: Qwen2.5-Coder-0.5B downloaded on request")
    expect(panel.locator(".jp-specgen-download-offer, progress.jp-specgen-download-progress")).to_have_count(0)


def test_the_panel_names_the_embedded_model_and_offers_the_better_one(lab, browser):
    """Before any click: the panel says which model serves and why, with the status bar's offer."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 700})
    page.goto(lab.url("lab"))
    status = page.locator(".jp-specgen-status")
    expect(status).to_contain_text("specgen-tiny-code", timeout=120_000)
    status.locator("span").first.click()
    panel = page.locator(".jp-specgen-personalize")
    model = panel.get_by_test_id("specgen-model")
    expect(model).to_contain_text("Completions come from specgen-tiny-code", timeout=30_000)
    expect(model).to_contain_text("Why this model:")
    expect(panel.locator(".jp-specgen-download-offer")).to_have_text(
        re.compile(r"Download Qwen2\.5-Coder-0\.5B \(≈1(\.0)? GB\) for better suggestions"))
