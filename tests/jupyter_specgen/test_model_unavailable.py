"""A model that cannot be loaded: the tab learns why and which setting fixes it; nothing hangs."""

from __future__ import annotations

import asyncio
import json

import pytest

from jupyter_specgen.protocol import PROTOCOL_VERSION


@pytest.fixture
def jp_server_config(tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
        "SpecgenExtension": {"model": str(tmp_path / "no-model-here")},
    }


async def test_status_error_names_the_setting_and_requests_fail_fast(jp_serverapp, jp_ws_fetch):
    """The status pushed to the tab is `error` with the fix; a completion is refused at once."""
    ws = await jp_ws_fetch("specgen", "ws")
    status = json.loads(await asyncio.wait_for(ws.read_message(), 120))
    while status["state"] == "starting":
        status = json.loads(await asyncio.wait_for(ws.read_message(), 120))
    assert status["state"] == "error"
    assert "SpecgenExtension.model" in status["message"] and "local folder" in status["message"]
    frame = {"type": "complete", "version": PROTOCOL_VERSION, "id": 1, "path": "a.ipynb", "cell_id": "c", "prefix": "x"}
    ws.write_message(json.dumps(frame))
    reply = json.loads(await asyncio.wait_for(ws.read_message(), 10))
    while reply["type"] == "progress":  # not final; the answer must still come within seconds
        reply = json.loads(await asyncio.wait_for(ws.read_message(), 10))
    assert reply["type"] == "error" and reply["error"]["type"] == "backend_unavailable"
    assert "SpecgenExtension.model" in reply["error"]["message"]
    ws.close()
