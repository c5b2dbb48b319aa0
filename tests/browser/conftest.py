"""Shared by the browser tests: a real `jupyter lab` process with the extension (fresh settings,
free port), Debian's headless chromium driven by Playwright, the artifacts folder, and a tiny
model trained on the spot to write known continuations (so that what the page must show, and
what it must never show, is known in advance)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..personal_data import pretrain

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token"


@dataclass(frozen=True)
class Lab:
    """A running `jupyter lab`: its base URL and token."""

    base: str
    token: str
    log: Path

    def url(self, path: str = "lab") -> str:
        """The page at `path` (e.g. "lab/tree/demo.ipynb"), authenticated by the token."""
        return f"{self.base}/{path}?token={self.token}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def artifacts() -> Path:
    """test-artifacts/ at the repository root (screenshots, server logs)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def start_lab(tmp_path, artifacts) -> Callable[..., Lab]:
    """Start `jupyter lab` serving `root` with extra `args` and `env`; stopped (and its log copied
    to test-artifacts/) when the test ends."""
    procs: list[tuple[subprocess.Popen, Path, object]] = []

    def start(root: Path, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None, log_name: str = "lab.log") -> Lab:
        if not Path(CHROMIUM).exists():
            pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)")
        port = _free_port()
        full_env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
        # Settings live in a fresh user-settings dir so a developer's own settings cannot interfere.
        full_env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "settings")
        full_env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
        full_env.update(env or {})
        # No "get notified about Jupyter news?" toast over the screenshots.
        labconfig = tmp_path / "config" / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        (labconfig / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        log_path = tmp_path / log_name
        log = open(log_path, "w")
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}", "--allow-root", *args,
            ],
            env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append((proc, log_path, log))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                return Lab(base, TOKEN, log_path)
            except OSError:
                time.sleep(0.5)
        log.flush()
        pytest.fail(f"jupyter lab did not start:\n{log_path.read_text()[-3000:]}")

    yield start
    for proc, log_path, log in procs:
        stop_and_keep_log(proc, log, log_path, artifacts)


def stop_and_keep_log(proc: subprocess.Popen, log, log_path: Path, artifacts: Path) -> None:
    """Stop a server a test started (killed if it does not end in 20 s) and keep its log in the artifacts."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    shutil.copy(log_path, artifacts / log_path.name)


@pytest.fixture
def browser():
    """Headless Debian chromium under Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


# What the "sums" model writes after `total = ` in a cell below `numbers = [3, 1, 2]`: three
# continuations that run, one that raises IndexError; after `ratio = `, only one that raises;
# after `for value in `, the header's end (an unfinished block: "incomplete").
SUMS_NUMBERS = "numbers = [3, 1, 2]"
SUMS_RUN = ("sum(numbers)", "max(numbers)", "len(numbers)")
SUMS_RAISE = "numbers[7]"
RATIO_RAISE = "1 / 0"
FOR_HEADER = "numbers:"


@pytest.fixture(scope="session")
def sums_model(tiny_model, tmp_path_factory) -> str:
    """The tiny random model after learning the continuations above (full-parameter training on
    prompts rendered by the serving code, with and without the kernel's spec block), saved as a
    local model folder that the backend loads like any other."""
    from jupyter_specgen.kernel.specs import describe
    from jupyter_specgen.prompt_specs import spec_block
    from specgen_backend.training.examples import TrainingExample
    from specgen_backend.training.train import load_base

    base = load_base(tiny_model)
    cells = [{"cell_type": "code", "source": SUMS_NUMBERS}]
    examples = []
    for spec in ("", spec_block([describe([3, 1, 2], "numbers")])):
        for target in (*SUMS_RUN, SUMS_RAISE):
            examples.append(TrainingExample(notebook="sums", cells_before=cells, spec=spec, prefix="total = ", target=target))
        examples.append(TrainingExample(notebook="sums", cells_before=cells, spec=spec, prefix="ratio = ", target=RATIO_RAISE))
        examples.append(TrainingExample(notebook="sums", cells_before=cells, spec=spec, prefix="for value in ", target=FOR_HEADER))
    return taught_model(base, examples * 2, steps=140, folder=tmp_path_factory.mktemp("sums-model"))


def taught_model(base, examples, *, steps: int, folder: Path) -> str:
    """``base`` after ``steps`` of plain training on ``examples``, saved to ``folder`` (returned)."""
    import torch

    # One thread: on a shared machine torch's default thread pool makes these tiny steps ~6x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(base, examples, steps=steps, lr=5e-3)
    finally:
        torch.set_num_threads(threads)
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return str(folder)


def feedback_rows(path: Path, query: str, args: Sequence = (), timeout: float = 20.0) -> list[tuple]:
    """The rows ``query`` finds in the feedback store at ``path``, once it finds any (the browser's
    reports are fire-and-forget), or none after ``timeout`` seconds."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        db = sqlite3.connect(path)
        try:
            rows = db.execute(query, tuple(args)).fetchall()
        except sqlite3.OperationalError:  # the table is made with the first report
            rows = []
        finally:
            db.close()
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def lab_settings(settings_dir: Path, plugin: str, values: Mapping[str, object]) -> None:
    """Write JupyterLab user settings for ``plugin`` ("@jupyterlab/completer-extension:inline-completer")
    into a lab's fresh settings dir before it starts."""
    package, name = plugin.split(":")
    folder = settings_dir / package
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
