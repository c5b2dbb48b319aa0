"""The README's main command, `bash scripts/lab.sh`, as a newcomer runs it: in a fresh virtual
environment, as whoever they are (root in CI and in containers), it installs the package and
serves JupyterLab with the server extension; a second launch does not reinstall; an editable
install is left as it is."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOKEN = "lab-sh-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(venv: Path, home: Path, log: Path, *, timeout_s: float, repo: Path = REPO) -> tuple[float, str]:
    """Run ``repo``'s lab.sh with ``venv`` first on PATH until JupyterLab serves the specgen routes;
    stop it. Returns (seconds until serving, the script's output)."""
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/lab.sh", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={home}"],
            cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = started + timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    pytest.fail(f"lab.sh exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    # A route of our server extension: JupyterLab is up *with* jupyter_specgen.
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/specgen/personalize?token={TOKEN}", timeout=5) as r:
                        json.load(r)
                    return time.monotonic() - started, log.read_text()
                except OSError:
                    time.sleep(1)
            pytest.fail(f"JupyterLab did not serve within {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            except ProcessLookupError:  # it had ended (the failure above says how)
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    raise AssertionError("unreachable")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_fresh_venv_serves_then_second_launch_does_not_reinstall(tmp_path):
    """A fresh venv: the first launch installs and serves (with --allow-root said when root); the second skips the install."""
    # A copy of the tree as it is now (with the built labextension), so that edits made to the
    # working tree while the test runs cannot count as "the source changed".
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(
        ".git", "node_modules", "test-artifacts", ".pytest_cache", ".hypothesis", ".benchmarks", "__pycache__", ".yarn"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    home = tmp_path / "home"
    home.mkdir()
    first_s, first = _launch(venv, home, tmp_path / "first.log", timeout_s=1200, repo=repo)
    assert "installing jupyter-specgen" in first, first[-3000:]
    if os.geteuid() == 0:
        assert "running as root: adding --allow-root" in first
    # The package went into the venv, not into the interpreter running the tests.
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import jupyter_specgen; print(jupyter_specgen.__file__)"],
                               capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert installed.startswith(str(venv)), installed

    second_s, second = _launch(venv, home, tmp_path / "second.log", timeout_s=300, repo=repo)
    assert "up to date: not reinstalling" in second, second[-3000:]
    assert "installing jupyter-specgen" not in second
    assert second_s < first_s


def test_editable_install_is_left_alone(tmp_path):
    """With the editable install that scripts/test.sh makes, lab.sh neither reinstalls nor turns it into a copy."""
    from importlib import metadata

    dist = metadata.distribution("jupyter-specgen")
    if not json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable"):
        pytest.skip("the test interpreter's jupyter-specgen is not an editable install")
    venv = Path(sys.prefix)
    home = tmp_path / "home"
    home.mkdir()
    _, out = _launch(venv, home, tmp_path / "lab.log", timeout_s=180)
    assert "installed in editable mode" in out, out[-3000:]
    assert "installing jupyter-specgen" not in out and "reinstalling" not in out
    after = metadata.distribution("jupyter-specgen")
    assert json.loads(after.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable")
