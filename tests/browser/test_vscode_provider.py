"""The VS Code extension's provider (vscode/src, the VS Code API behind the thin seam of
vscode/src/seam.ts) against real parts: a real `jupyter lab` with jupyter-specgen, its backend
serving the tiny "sums" model (conftest.sums_model: known continuations after `total = ` and
`ratio = `) and a real kernel that ran `numbers = [3, 1, 2]`; and a real standalone
`specgen-backend serve`. The TypeScript is compiled with tsc and its tests run with `node --test`
(vscode/test/*.test.ts); this file starts the servers, passes where they are in the environment,
and checks that node's tests passed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from .conftest import RATIO_RAISE, SUMS_NUMBERS, SUMS_RAISE, SUMS_RUN, stop_and_keep_log

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

VSCODE = Path(__file__).resolve().parents[2] / "vscode"
NODE_TESTS = VSCODE / "out" / "vscode" / "test"


@pytest.fixture(scope="module")
def built() -> Path:
    """vscode/ compiled by its own tsc (vscode/node_modules from `npm ci --prefix vscode`)."""
    tsc = VSCODE / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.fail(f"{tsc} is missing: run `npm ci --prefix vscode` first (scripts/test.sh does)")
    done = subprocess.run([str(tsc), "-p", str(VSCODE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"tsc failed:\n{done.stdout}\n{done.stderr}"
    return NODE_TESTS


def _node_test(test_file: Path, env: dict[str, str], artifacts: Path, timeout: float = 600) -> str:
    """Run one compiled node test file; fail with its whole output unless every test passed."""
    node = shutil.which("node")
    assert node, "node is not on PATH"
    done = subprocess.run([node, "--test", str(test_file)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, cwd=VSCODE)
    out = done.stdout + done.stderr
    (artifacts / f"node-{test_file.stem}.log").write_text(out)
    assert done.returncode == 0 and "# fail 0" in out, out[-12000:]
    return out


def _sums_env() -> dict[str, str]:
    return {"SPECGEN_SUMS_RUN": json.dumps(list(SUMS_RUN)), "SPECGEN_SUMS_RAISE": SUMS_RAISE,
            "SPECGEN_SUMS_NUMBERS": SUMS_NUMBERS, "SPECGEN_RATIO_RAISE": RATIO_RAISE}


def _logged(out: str, key: str):
    """The JSON a node test logged after ``key`` (``console.log(`KEY ${JSON.stringify(...)}`)``)."""
    line = next(line for line in out.splitlines() if f"{key} " in line)
    return json.loads(line.split(f"{key} ", 1)[1])


def _runs(line: str) -> bool:
    """Whether ``line`` runs below the notebook's first cell (in this process)."""
    try:
        exec(compile(f"{SUMS_NUMBERS}\n{line}", "<suggestion>", "exec"), {})
    except Exception:  # noqa: BLE001 - any error means it should not have been given
        return False
    return True


def _rest(lab, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{lab.base}/{path}", data=data, method=method,
                                     headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read() or b"null")


def _run_in_kernel(lab, kernel_id: str, code: str, timeout: float = 120) -> None:
    """Execute ``code`` in the kernel through Jupyter's kernel websocket, as a notebook front end does."""
    from websockets.sync.client import connect

    url = f"{lab.base.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels"
    msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": session,
              "version": "5.3", "date": ""}
    message = {"header": header, "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
               "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                           "allow_stdin": False, "stop_on_error": True}}
    with connect(url, additional_headers={"Authorization": f"token {lab.token}"}, max_size=None) as ws:
        ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = json.loads(ws.recv(timeout))
            if reply.get("parent_header", {}).get("msg_id") == msg_id and reply["header"]["msg_type"] == "execute_reply":
                assert reply["content"]["status"] == "ok", reply["content"]
                return
    pytest.fail(f"the kernel did not run {code!r} within {timeout} s")


def test_generated_backend_protocol_is_current():
    """vscode/src/backend_protocol.ts is what the generator writes from specgen_backend.protocol today."""
    sys.path.insert(0, str(VSCODE / "scripts"))
    try:
        import backend_protocol
    finally:
        sys.path.pop(0)
    committed = (VSCODE / "src" / "backend_protocol.ts").read_text()
    assert committed == backend_protocol.render(), "run `python vscode/scripts/backend_protocol.py` and commit the result"


def test_provider_without_a_server_says_why(built, artifacts):
    """An unreachable Jupyter server or backend gives an error status with the reason at once;
    the kernel of a notebook is found among a server's sessions (VS Code's -jvsc- paths too)."""
    out = _node_test(built / "unreachable.test.js", {}, artifacts, timeout=120)
    assert "# pass 3" in out, out


def test_feedback_inferred_from_edits(built, artifacts):
    """Without a server: what the feedback tracker makes of the edits where items were given (a
    word inserted: partial accept; Tab: one accept of what was not taken yet; an insertion that is
    an item and the start of another: decided by the accept command; typed over: dismissed;
    typed through, edits elsewhere, the cursor moved: nothing)."""
    out = _node_test(built / "feedback.test.js", {}, artifacts, timeout=120)
    assert "# pass 7" in out, out


def test_runs_settle_accepts(built, artifacts):
    """Without a server: an accept waits for its cell's run (VS Code's execution summaries) and is
    sent again with it, under its key: the text when the run started, and whether it succeeded."""
    out = _node_test(built / "outcome.test.js", {}, artifacts, timeout=120)
    assert "# pass 3" in out, out


def test_server_choice_from_kernel_findings(built, artifacts):
    """Without a server: specgen.mode "auto" reads the kernel's findings line and picks the server
    running the kernel, else the deepest root_dir holding the notebook, else the kernel's working
    directory, never one without jupyter-specgen; a silent or failing kernel gives none."""
    out = _node_test(built / "discover.test.js", {}, artifacts, timeout=120)
    assert "# pass 4" in out, out


def test_provider_against_a_real_jupyter_server(built, tmp_path, sums_model, start_lab, artifacts):
    """Through a real `jupyter lab`'s /specgen/ws: the provider answers with the first candidate
    validated in the notebook's kernel as soon as it is shown, and, asked again at the same cursor,
    with every one (the one on screen first, then the server's rank order), without a new request, and
    an explicit query before the end waits for it; when all raise none comes
    and the status says why; markdown and cells below are sent; a newer request cancels the older;
    a .py file gets not-validated items; a wrong token is named; an accepted item, a partial accept
    and a dismissal, inferred from the edits, land in the feedback store as such; an accept whose
    cell then ran is stored as kept, one whose cell raised as raised (no longer pending); the
    server-finding snippet of specgen.mode "auto", run in the notebook's real kernel, finds this
    server's URL and token and leaves no name in the kernel."""
    from .conftest import feedback_rows

    root = tmp_path / "root"
    root.mkdir()
    (root / "demo.ipynb").write_text(json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": [SUMS_NUMBERS]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    feedback = tmp_path / "feedback.sqlite"
    lab = start_lab(root, [f"--SpecgenExtension.model={sums_model}", "--SpecgenExtension.max_tokens=12",
                           "--SpecgenExtension.temperature=1.0", "--SpecgenExtension.candidates=8",
                           f"--SpecgenExtension.feedback_path={feedback}",
                           f"--SpecgenExtension.adapter_root={tmp_path / 'adapters'}"], log_name="lab-vscode.log")
    # The notebook's kernel lives on this server, as when VS Code's Jupyter extension connects to it.
    session = _rest(lab, "POST", "api/sessions", {"path": "demo.ipynb", "type": "notebook", "name": "demo.ipynb",
                                                  "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    _run_in_kernel(lab, kernel_id, SUMS_NUMBERS)
    out = _node_test(built / "jupyter.test.js", {"SPECGEN_JUPYTER_URL": lab.base, "SPECGEN_JUPYTER_TOKEN": lab.token,
                                                 "SPECGEN_KERNEL_ID": kernel_id, "SPECGEN_JUPYTER_ROOT": str(root),
                                                 **_sums_env()}, artifacts)
    assert "# pass 12" in out, out
    items, ratio, accepted = (_logged(out, key) for key in ("ITEMS", "RATIO", "ACCEPTED"))
    assert len(items) >= 2 and all(_runs(f"total = {text}") for text in items), items
    assert all(_runs(f"ratio = {text}") for text in ratio), ratio
    # Each report is one row, none counted twice: the accept; the word taken (an accept, pending
    # like every accept until its cell runs; the store keeps no partial flag) and the rest of
    # that item at the longer prefix; the item typed over, dismissed.
    # The last two accepts' cells then ran: once cleanly (kept: trained on), once raising.
    (part, rest), dismissed = _logged(out, "PARTIAL"), _logged(out, "DISMISSED")
    kept, raised = _logged(out, "RAN")
    query = "SELECT notebook, prefix, suggestion, accepted, outcome, cell_id FROM feedback ORDER BY id"
    rows = feedback_rows(feedback, query)
    deadline = time.monotonic() + 20
    while len(rows) < 6 and time.monotonic() < deadline:
        time.sleep(0.25)
        rows = feedback_rows(feedback, query)
    assert [row[:5] for row in rows] == [("demo.ipynb", "total = ", accepted, 1, "pending"),
                                         ("demo.ipynb", "total = ", part, 1, "pending"),
                                         ("demo.ipynb", f"total = {part}", rest, 1, "pending"),
                                         ("demo.ipynb", "total = ", dismissed, 0, "dismissed"),
                                         ("demo.ipynb", "total = ", kept, 1, "kept"),
                                         ("demo.ipynb", "total = ", raised, 1, "raised")], rows
    assert [row[5] for row in rows[4:]] == ["cell-ran", "cell-raised"], rows
    print(f"first item at once: {_logged(out, 'FIRST')}; Alt+] before done: {_logged(out, 'EXPLICIT')}")


@pytest.fixture
def standalone_backend(sums_model, tmp_path, artifacts):
    """A real `specgen-backend serve` on loopback with the sums model: (ws URL, token)."""
    token = uuid.uuid4().hex
    token_file = tmp_path / "backend-token"
    token_file.write_text(token)
    log_path = tmp_path / "backend-vscode.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "specgen_backend", "serve", "--model", sums_model, "--device", "cpu",
                             "--token-file", str(token_file), "--port", "0", "--max-new-tokens", "12"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        assert line, f"specgen-backend exited:\n{log_path.read_text()[-3000:]}"
        yield json.loads(line)["url"], token
    finally:
        stop_and_keep_log(proc, log, log_path, artifacts)


def test_provider_against_a_real_standalone_backend(built, standalone_backend, artifacts):
    """Straight to a real `specgen-backend serve`: several candidates as items, most likely first,
    each marked "not validated" (and the status bar says so); a wrong token is named."""
    url, token = standalone_backend
    out = _node_test(built / "backend.test.js", {"SPECGEN_BACKEND_URL": url, "SPECGEN_BACKEND_TOKEN": token,
                                                 **_sums_env()}, artifacts)
    assert "# pass 2" in out, out
