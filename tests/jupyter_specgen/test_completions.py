"""The server extension end to end: a real Jupyter server, its real backend child process, and
a browser-side websocket client speaking the browser protocol."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from jupyter_specgen.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION


def _service(jp_serverapp):
    return jp_serverapp.web_app.settings["specgen"]


async def _open(jp_ws_fetch):
    """A tab's websocket, once the backend reports ready."""
    ws = await jp_ws_fetch("specgen", "ws")
    while True:
        status = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        assert status["type"] == "status"
        assert status["state"] != "error", status
        if status["state"] == "ready":
            return ws, status


def _complete(id, cell_id="cell-1", **kw):
    body = {
        "type": "complete", "version": PROTOCOL_VERSION, "id": id, "path": "Untitled.ipynb", "cell_id": cell_id,
        "prefix": "import numpy as np\nx = np.", "suffix": "", "kernel_id": None,
        "cells": [{"cell_type": "markdown", "source": "# Arrays"}, {"cell_type": "code", "source": ""}], "active": 1,
    }  # fmt: skip
    body.update(kw)
    return json.dumps(body)


async def _final(ws, id):
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if frame.get("reply_to") == id:
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


async def test_extension_is_enabled(jp_serverapp):
    """The server extension loads and registers its service."""
    assert "jupyter_specgen" in jp_serverapp.extension_manager.extensions
    assert _service(jp_serverapp).process is not None


async def test_the_tabs_websocket_sends_each_frame_at_once(jp_serverapp, jp_ws_fetch, tiny_model):
    """TCP_NODELAY on the server's end of a tab's websocket: the ghost text right after a progress
    frame is not held back for the ACK of the frame before it (Nagle against delayed ACKs)."""
    import socket

    ws, _ = await _open(jp_ws_fetch)
    (handler,) = _service(jp_serverapp)._subscribers
    sock = handler.ws_connection.stream.socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    ws.close()


async def test_complete_streams_chunks_and_ends_with_done(jp_serverapp, jp_ws_fetch, tiny_model):
    """A request with stream=true gets raw chunks, then a final `done`; without a kernel its items are
    shown "not_validated", saying why."""
    ws, status = await _open(jp_ws_fetch)
    assert status["model"] == Path(tiny_model).name and status["device"] == "cpu"  # a folder is shown by its name
    ws.write_message(_complete(1, stream=True))
    frames = await _final(ws, 1)
    assert frames[-1]["type"] == "done", frames[-1]
    streamed = "".join(f["text"] for f in frames if f["type"] == "chunk" and f["candidate"] == 0)
    assert streamed, "the tiny model always produces some text in 16 tokens"
    items = frames[-1]["items"]
    assert items or frames[-1]["summary"].startswith("no suggestion: "), frames[-1]
    assert all(i["verdict"] == "not_validated" and i["detail"] == "not validated: no kernel" for i in items), items
    shown = [f["item"] for f in frames if f["type"] == "shown"]
    assert sorted(i["text"] for i in shown) == sorted(i["text"] for i in items)
    ws.close()


async def test_without_stream_no_raw_text_is_sent(jp_serverapp, jp_ws_fetch):
    """By default nothing unvalidated is streamed: progress frames, then shown items, then `done`."""
    ws, _ = await _open(jp_ws_fetch)
    ws.write_message(_complete(1))
    frames = await _final(ws, 1)
    kinds = [f["type"] for f in frames]
    assert "chunk" not in kinds and kinds[-1] == "done", kinds
    assert [f["stage"] for f in frames if f["type"] == "progress"][:1] == ["generating"], frames
    ws.close()


async def test_newer_request_for_the_same_cell_cancels_the_older(jp_serverapp, jp_ws_fetch):
    """Stale requests are dropped: the older one ends `cancelled`, the newer one completes."""
    ws, _ = await _open(jp_ws_fetch)
    ws.write_message(_complete(1))
    ws.write_message(_complete(2))
    first, second = await _final(ws, 1), await _final(ws, 2)
    assert first[-1]["type"] == "error" and first[-1]["error"]["type"] == "cancelled"
    assert second[-1]["type"] == "done"
    ws.close()


@pytest.mark.parametrize(
    ("frame", "error_type"),
    [
        ("]]", "malformed"),
        (json.dumps({"type": "complete", "version": PROTOCOL_VERSION, "id": 3}), "malformed"),
        (json.dumps({"type": "summon", "version": PROTOCOL_VERSION, "id": 3}), "unknown_type"),
        (json.dumps({"type": "cancel", "version": 999, "id": 3}), "version"),
        (_complete(3, prefix="x" * (MAX_MESSAGE_BYTES + 1)), "too_large"),
    ],
    ids=["not-json", "missing-fields", "unknown-type", "wrong-version", "oversized"],
)
async def test_bad_browser_frames_get_errors(jp_serverapp, jp_ws_fetch, frame, error_type):
    """Bad frames from a tab are answered with an error; the tab's connection keeps serving."""
    ws, _ = await _open(jp_ws_fetch)
    ws.write_message(frame)
    reply = json.loads(await asyncio.wait_for(ws.read_message(), 30))
    assert reply["type"] == "error" and reply["error"]["type"] == error_type, reply
    ws.write_message(_complete(4))
    assert (await _final(ws, 4))[-1]["type"] == "done"
    ws.close()


async def test_unauthenticated_websocket_is_refused(jp_serverapp, jp_ws_fetch):
    """Jupyter's own auth guards the websocket."""
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as info:
        await jp_ws_fetch("specgen", "ws", headers={"Authorization": "token wrong"})
    assert info.value.code == 403


async def test_killed_backend_answers_with_an_error_and_is_restarted(jp_serverapp, jp_ws_fetch):
    """Killing the backend mid-request gives the tab an error; the extension restarts it."""
    ws, _ = await _open(jp_ws_fetch)
    process = _service(jp_serverapp).process
    old_pid = process.pid
    ws.write_message(_complete(1, max_tokens=48))
    os.kill(old_pid, signal.SIGKILL)
    frames = await _final(ws, 1)
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["type"] == "backend_unavailable", frames[-1]
    states = []
    while "ready" not in states:
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if frame["type"] == "status":
            states.append(frame["state"])
    assert "starting" in states
    assert process.pid != old_pid
    ws.write_message(_complete(2))
    assert (await _final(ws, 2))[-1]["type"] == "done"
    ws.close()
