"""The whole product in a real browser: JupyterLab served by a real `jupyter lab` process, opened in
headless Debian chromium through Playwright, ghost text from the real backend, accepted with Tab."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path) -> None:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Sums"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": []},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture
def lab(tmp_path, tiny_model):
    """A `jupyter lab` process with the extension, configured for the tiny model."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)")
    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "demo.ipynb")
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    # Settings live in a fresh user-settings dir so a developer's own settings cannot interfere.
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}", "--allow-root",
            f"--SpecgenExtension.model={tiny_model}", "--SpecgenExtension.max_tokens=12",
            "--SpecgenExtension.temperature=1.0",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"jupyter lab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
    yield base
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "lab.log", ARTIFACTS / "lab.log")


def test_ghost_text_is_shown_and_tab_accepts_it(lab):
    """Typing in a cell shows ghost text from the backend; Tab puts it into the cell."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        try:
            page.goto(f"{lab}/lab/tree/demo.ipynb?token={TOKEN}")
            status = page.locator(".jp-specgen-status")
            expect(status).to_contain_text(re.compile("ready|tiny", re.I), timeout=120_000)
            editor = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content")
            editor.click()
            page.keyboard.type("total = 0\nfor value in ", delay=30)
            ghost = page.locator(".jp-GhostText")
            expect(ghost).not_to_be_empty(timeout=60_000)
            suggestion = ghost.first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "ghost-text.png"))
            page.keyboard.press("Tab")
            expect(ghost).to_have_count(0, timeout=10_000)
            text = editor.inner_text().replace("\u00a0", " ")
            page.screenshot(path=str(ARTIFACTS / "accepted.png"))
            first_line = suggestion.splitlines()[0].strip()
            assert "for value in " in text
            assert first_line and first_line in text, (suggestion, text)
        finally:
            browser.close()
