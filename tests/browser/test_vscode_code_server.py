"""The VS Code extension in a real VS Code: code-server (npm, Node 22) run headless with the built
.vsix installed, opened in Debian's headless chromium through Playwright. The notebook's kernel
lives on a real `jupyter lab` with jupyter-specgen (the tiny "sums" model of conftest.py), which
the extension's settings point at; typing `total = ` in the notebook's second cell shows ghost
text from our backend that ran in the kernel, Tab accepts it.

code-server and its Node 22 come from scripts/code_server_env.sh (scripts/test.sh runs it), which
installs them once per machine into a cache folder that the test finds by itself; CODE_SERVER (the
launcher) and CODE_SERVER_NODE (a Node 22 binary) point it at another install. With neither, the
test is skipped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import SUMS_NUMBERS, stop_and_keep_log
from .test_vscode_provider import VSCODE, _rest, _run_in_kernel, _runs

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

# Where scripts/code_server_env.sh installs them; its marker says the install completed.
_CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
_CACHE = Path(os.environ.get("SPECGEN_CODE_SERVER_DIR") or _CACHE_HOME / "jupyter-specgen" / "code-server-4.110.0")
_CACHED = (_CACHE / ".installed").exists()
CODE_SERVER = os.environ.get("CODE_SERVER") or (str(_CACHE / "cs/node_modules/.bin/code-server") if _CACHED else "")
CODE_SERVER_NODE = os.environ.get("CODE_SERVER_NODE") or (
    str(_CACHE / "node/node_modules/node/bin/node") if _CACHED else "")
VSIX = VSCODE / "specgen.vsix"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def code_server(tmp_path, artifacts):
    """Start code-server with the .vsix installed; yields a function(folder, settings) -> URL."""
    if not (CODE_SERVER and Path(CODE_SERVER).exists() and CODE_SERVER_NODE and Path(CODE_SERVER_NODE).exists()):
        pytest.skip("code-server is not installed: run `bash scripts/code_server_env.sh` (or set CODE_SERVER to "
                    "code-server's launcher and CODE_SERVER_NODE to a Node 22 binary)")
    if not VSIX.exists():
        pytest.fail(f"{VSIX} is missing: run `npm run package --prefix vscode`")
    env = {**os.environ, "PATH": f"{Path(CODE_SERVER_NODE).parent}:{os.environ['PATH']}"}
    user, extensions = tmp_path / "cs-user", tmp_path / "cs-extensions"
    config = tmp_path / "cs-config.yaml"
    config.write_text("auth: none\ncert: false\n")
    common = ["--config", str(config), "--user-data-dir", str(user), "--extensions-dir", str(extensions)]
    done = subprocess.run([CODE_SERVER, *common, "--install-extension", str(VSIX)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "successfully installed" in done.stdout, done.stdout + done.stderr
    procs = []

    def start(folder: Path, settings: dict) -> str:
        (user / "User").mkdir(parents=True, exist_ok=True)
        (user / "User" / "settings.json").write_text(json.dumps(settings))
        port = _free_port()
        log = open(tmp_path / "code-server.log", "w")
        proc = subprocess.Popen([CODE_SERVER, *common, "--bind-addr", f"127.0.0.1:{port}", "--auth", "none",
                                 "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
                                 "--disable-getting-started-override", str(folder)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2)
                return base
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"code-server did not start:\n{(tmp_path / 'code-server.log').read_text()[-3000:]}")

    yield start
    for proc, log in procs:
        stop_and_keep_log(proc, log, tmp_path / "code-server.log", artifacts)


def test_ghost_text_in_a_vscode_notebook_from_the_jupyter_server(code_server, tmp_path, sums_model, start_lab,
                                                                 browser, artifacts):
    """In code-server's notebook editor, `total = ` in the second cell shows ghost text that ran in
    the notebook's kernel on the Jupyter server; the status bar says "✓ ran"; Alt+] shows another
    suggestion that runs; Tab inserts the one on screen."""
    from playwright.sync_api import expect

    root = tmp_path / "root"
    root.mkdir()
    cells = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": [SUMS_NUMBERS]},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": []}]
    (root / "demo.ipynb").write_text(json.dumps({
        "cells": cells, "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}}}))
    lab = start_lab(root, [f"--SpecgenExtension.model={sums_model}", "--SpecgenExtension.max_tokens=12",
                           "--SpecgenExtension.temperature=1.0", "--SpecgenExtension.candidates=8",
                           f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}"], log_name="lab-code-server.log")
    session = _rest(lab, "POST", "api/sessions", {"path": "demo.ipynb", "type": "notebook", "name": "demo.ipynb",
                                                  "kernel": {"name": "python3"}})
    _run_in_kernel(lab, session["kernel"]["id"], SUMS_NUMBERS)
    base = code_server(root, {
        "specgen.mode": "jupyter", "specgen.jupyter.url": lab.base, "specgen.jupyter.token": lab.token,
        "specgen.timeout": 90000, "workbench.startupEditor": "none", "security.workspace.trust.enabled": False,
        "editor.inlineSuggest.enabled": True, "editor.inlineSuggest.showToolbar": "always",
        "telemetry.telemetryLevel": "off", "workbench.tips.enabled": False, "extensions.autoUpdate": False,
        "extensions.ignoreRecommendations": True, "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
        "editor.suggestOnTriggerCharacters": False, "editor.acceptSuggestionOnEnter": "off",
        "workbench.colorTheme": "Default Light Modern", "workbench.editorAssociations": {"*.ipynb": "jupyter-notebook"},
        "remote.autoForwardPorts": False, "chat.disableAIFeatures": True,
        "workbench.secondarySideBar.defaultVisibility": "hidden", "notebook.cellToolbarLocation": {"default": "hidden"}})

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(f"{base}/?folder={root}", wait_until="domcontentloaded")
        page.locator(".monaco-workbench").wait_for(timeout=120_000)
        # The status bar item is there once the extension activated (when startup finished).
        status = page.locator(".statusbar-item", has_text="specgen:").first
        expect(status).to_contain_text("specgen", timeout=120_000)
        page.locator(".explorer-folders-view .monaco-list-row", has_text="demo.ipynb").dblclick(timeout=60_000)
        expect(status).to_contain_text("sums-model", timeout=180_000)
        cell_editors = page.locator(".notebook-editor .cell-editor-container .monaco-editor")
        expect(cell_editors).to_have_count(2, timeout=60_000)
        cell_editors.nth(1).click()
        page.keyboard.type("total = ", delay=40)
        ghost = page.locator(".notebook-editor .ghost-text-decoration, .notebook-editor .ghost-text").first
        expect(ghost).to_be_visible(timeout=120_000)
        expect(status).to_contain_text("✓ ran", timeout=60_000)
        # VS Code draws the ghost text in several decorations (one per run of inserted text).
        shown = "".join(page.locator(".notebook-editor .ghost-text-decoration").all_inner_texts()).strip()
        page.screenshot(path=str(artifacts / "vscode-ghost-text.png"))
        assert _runs(f"total = {shown}"), shown
        # Several items: VS Code's own key for the next inline suggestion shows another one (VS
        # Code asks the provider again, explicitly, and gets the items of this cursor that held up,
        # kept by the extension: no second request to the server).
        ghosts = page.locator(".notebook-editor .ghost-text-decoration")
        first = shown
        deadline = time.monotonic() + 90
        while shown == first and time.monotonic() < deadline:
            page.keyboard.press("Alt+BracketRight")
            page.wait_for_timeout(1_500)
            shown = "".join(ghosts.all_inner_texts()).strip() or first
        assert shown != first, f"Alt+] showed no other suggestion than {first!r}"
        assert _runs(f"total = {shown}"), shown
        page.screenshot(path=str(artifacts / "vscode-ghost-text-next.png"))
        page.keyboard.press("Tab")
        expect(page.locator(".notebook-editor .ghost-text-decoration")).to_have_count(0, timeout=10_000)
        line = cell_editors.nth(1).locator(".view-line").first.inner_text().replace("\u00a0", " ")
        page.screenshot(path=str(artifacts / "vscode-accepted.png"))
        assert line.strip() == f"total = {shown}", (line, shown)
    except Exception:
        page.screenshot(path=str(artifacts / "vscode-failure.png"))
        raise
    finally:
        page.close()
