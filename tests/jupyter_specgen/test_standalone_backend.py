"""A Jupyter server using a standalone backend (a shared GPU host's `specgen-backend serve`)
through `backend_url` and `backend_token_file`, instead of starting its own child."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from jupyter_specgen.protocol import PROTOCOL_VERSION

TOKEN = "standalone-secret"


@pytest.fixture(scope="module")
def standalone_backend(tiny_model, tmp_path_factory):
    """`specgen-backend serve` as an operator would run it, with a token file."""
    token_file = tmp_path_factory.mktemp("backend") / "token"
    token_file.write_text(TOKEN + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "specgen_backend", "serve", "--model", tiny_model, "--token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        event = json.loads(proc.stdout.readline())
        assert event["event"] == "listening", event
        yield event["url"], token_file
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def jp_server_config(standalone_backend):
    url, token_file = standalone_backend
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
        "SpecgenExtension": {
            "backend_url": url, "backend_token_file": str(token_file),
            "max_tokens": 8, "candidates": 2, "temperature": 1.0,
        },
    }  # fmt: skip


async def test_completions_go_to_the_configured_backend(jp_serverapp, jp_ws_fetch):
    """No child is started; completions are served by the standalone backend with its token."""
    assert jp_serverapp.web_app.settings["specgen"].process is None
    ws = await jp_ws_fetch("specgen", "ws")
    while (status := json.loads(await asyncio.wait_for(ws.read_message(), 60)))["state"] != "ready":
        assert status["state"] != "error", status
    frame = {"type": "complete", "version": PROTOCOL_VERSION, "id": 1, "path": "a.ipynb", "cell_id": "c", "prefix": "x = "}
    ws.write_message(json.dumps(frame))
    # chunk, progress and shown frames come first; done or error is the final answer.
    while (reply := json.loads(await asyncio.wait_for(ws.read_message(), 60))).get("reply_to") != 1 or reply["type"] not in ("done", "error"):
        pass
    assert reply["type"] == "done", reply
    ws.close()


class TestWrongToken:
    @pytest.fixture
    def jp_server_config(self, standalone_backend, tmp_path):
        url, _ = standalone_backend
        wrong = tmp_path / "wrong-token"
        wrong.write_text("not-the-token")
        return {
            "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
            "SpecgenExtension": {"backend_url": url, "backend_token_file": str(wrong)},
        }

    async def test_wrong_token_is_shown_as_an_error_with_the_setting(self, jp_serverapp, jp_ws_fetch):
        """A refused token reaches the status bar as an error naming the setting to fix."""
        ws = await jp_ws_fetch("specgen", "ws")
        while (status := json.loads(await asyncio.wait_for(ws.read_message(), 60)))["state"] != "error":
            pass
        assert "backend_token" in status["message"]
        ws.close()
