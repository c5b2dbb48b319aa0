"""Take the README's screenshot: real JupyterLab, the default model, a kernel holding a DataFrame.

    python tools/readme_screenshot.py --out docs/screenshot-ghost-text.png

Starts `jupyter lab` on a free loopback port with a throw-away root folder, runs the first cell
of a small notebook in the kernel, types into the second, waits for the ghost text and the
status bar's verdict, and saves a PNG. Needs Debian's chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

log = logging.getLogger("readme_screenshot")

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
TOKEN = "screenshot"

CELLS = [
    ("markdown", "# Monthly sales\nLoad the orders and summarise revenue per region."),
    ("code", "import pandas as pd\n\nsales = pd.DataFrame({\n    'region': ['north', 'south', 'north', 'east'],\n    'units': [3, 5, 2, 7],\n    'price': [9.5, 12.0, 9.5, 4.25],\n})"),
    ("code", ""),
]


def _notebook(path: Path) -> None:
    cells = []
    for kind, source in CELLS:
        cell = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": kernelspec}, "nbformat": 4, "nbformat_minor": 5}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshot-ghost-text.png"))
    parser.add_argument("--model", default="", help="SpecgenExtension.model (default: the embedded model)")
    parser.add_argument("--type", default="revenue = sales", help="what to type into the empty cell")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        _notebook(root / "sales.ipynb")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}", "--allow-root"]  # fmt: skip
        if args.model:
            cmd.append(f"--SpecgenExtension.model={args.model}")
        env = {"JUPYTERLAB_SETTINGS_DIR": str(Path(tmp) / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(Path(tmp) / "ws")}
        lab = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(180):
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1100, "height": 560}, device_scale_factor=1)
                page.goto(f"{base}/lab/tree/sales.ipynb?token={TOKEN}")
                expect(page.locator(".jp-specgen-status")).to_have_attribute("data-state", "ready", timeout=180_000)
                button = page.get_by_role("button", name="No")  # JupyterLab's news toast
                if button.count():
                    button.first.click()
                cells = page.locator(".jp-Notebook .jp-Cell")
                cells.nth(1).locator(".cm-content").click()
                page.keyboard.press("Shift+Enter")  # run the frame's cell; focus moves to the empty one
                expect(page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-InputPrompt")).to_contain_text("1", timeout=60_000)
                cells.nth(2).locator(".cm-content").click()
                page.keyboard.type(args.type, delay=40)
                expect(page.locator(".jp-GhostText")).not_to_be_empty(timeout=60_000)
                # The verdict of the shown suggestion arrives once every candidate has run in a fork.
                expect(page.locator(".jp-specgen-status")).to_contain_text(re.compile("ran|raised|validated"), timeout=60_000)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                log.info("ghost text: %r", page.locator(".jp-GhostText").first.inner_text())
                log.info("status: %r", page.locator(".jp-specgen-status").inner_text())
                log.info("wrote %s", args.out)
                browser.close()
        finally:
            lab.terminate()
            lab.wait(30)


if __name__ == "__main__":
    main()
