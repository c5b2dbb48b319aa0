"""Every browser request gets exactly one final answer, whatever arrives with it: a cancel or a newer
request in the same websocket read, an oversized frame, hostile numbers and strings, a kernel id the
server never started."""

from __future__ import annotations

import asyncio
import json

import pytest

from jupyter_specgen.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION

from .raw_ws import RawWebSocket
from .test_completions import _complete


@pytest.fixture
def raw_tab(jp_serverapp, http_server_client, jp_http_port, jp_base_url, jp_auth_header):
    """Opens a hand-written websocket to the running server, once its backend is ready."""

    async def open_tab() -> RawWebSocket:
        ws = await asyncio.wait_for(RawWebSocket.connect(jp_http_port, f"{jp_base_url}specgen/ws", jp_auth_header), 30)
        while (status := await ws.recv(120))["type"] != "status" or status["state"] != "ready":
            assert status.get("state") != "error", status
        return ws

    return open_tab


async def _finals(ws: RawWebSocket, ids: set) -> dict:
    """{id: [final frames]} until each of ``ids`` has one, then one more round trip to catch a second."""
    finals: dict = {}
    while not all(i in finals for i in ids):
        frame = await ws.recv(120)
        if frame["type"] in ("done", "error"):
            finals.setdefault(frame["reply_to"], []).append(frame)
    await ws.send_together(_complete(999, cell_id="sentinel", prefix="x"))
    while (frame := await ws.recv(120)).get("reply_to") != 999 or frame["type"] not in ("done", "error"):
        if frame["type"] in ("done", "error"):
            finals.setdefault(frame["reply_to"], []).append(frame)
    return finals


def _cancel(id):
    return json.dumps({"type": "cancel", "version": PROTOCOL_VERSION, "id": id})


async def test_cancel_or_a_newer_request_in_the_same_read_still_gets_one_final(
        raw_tab):
    """complete+cancel, and complete+complete for one cell, written in one TCP write: each request is
    answered exactly once (the cancelled ones with ``cancelled``)."""
    ws = await raw_tab()
    await ws.send_together(_complete(1, cell_id="a"), _cancel(1), _complete(2, cell_id="b"), _complete(3, cell_id="b"),
                           _complete(4, cell_id="c"), _complete(5, cell_id="c"), _cancel(5))
    finals = await _finals(ws, {1, 2, 3, 4, 5})
    assert all(len(v) == 1 for v in finals.values()), finals
    for cancelled in (1, 2, 4, 5):
        assert finals[cancelled][0]["error"]["type"] == "cancelled", finals[cancelled]
    assert finals[3][0]["type"] == "done", finals[3]
    ws.close()


async def test_an_oversized_frame_is_answered_with_its_id(raw_tab):
    """A complete beyond the size limit gets ``too_large`` with its own id, so the tab can finish it."""
    ws = await raw_tab()
    await ws.send_together(_complete(7, prefix="x" * (MAX_MESSAGE_BYTES + 1)), _complete(8, cell_id="d"))
    finals = await _finals(ws, {7, 8})
    assert finals[7][0]["error"]["type"] == "too_large" and len(finals[7]) == 1, finals[7]
    assert finals[8][0]["type"] == "done"
    ws.close()


async def test_hostile_values_in_browser_frames_are_malformed_with_their_id(
        raw_tab):
    """NaN/Infinity tokens, 400-digit integers, 1e400, lone surrogates and control-laden ids: a
    ``malformed`` naming the field, answered to the request's id; the socket never aborts; a kernel id
    the server never started is "not validated" with its reason, not ``internal``."""
    ws = await raw_tab()
    base = _complete(10, cell_id="e")
    cases = {
        11: base.replace('"id": 10', '"id": 11').replace('"active": 1', '"active": NaN'),
        12: base.replace('"id": 10', '"id": 12').replace('"active": 1', '"active": 1' + "0" * 400),
        13: base.replace('"id": 10', '"id": 13').replace('"active": 1', '"active": 1e400'),
        14: base.replace('"id": 10', '"id": 14').replace('"prefix": "', '"prefix": "\\ud800'),
        15: base.replace('"id": 10', '"id": 15').replace('"active": 1', '"active": -Infinity'),
    }
    await ws.send_together(*cases.values(), '{"type": "cancel", "version": 1, "id": 1' + "0" * 400 + "}")
    finals = await _finals(ws, set(cases))
    for id in cases:
        (answer,) = finals[id]
        assert answer["error"]["type"] == "malformed", answer
        assert "active" in answer["error"]["message"] or "prefix" in answer["error"]["message"] \
            or "JSON" in answer["error"]["message"], answer
    assert finals.get(None, [{}])[0].get("error", {}).get("type") == "malformed"  # the cancel with a huge id
    await ws.send_together(_complete(20, cell_id="f", kernel_id="no-such-kernel-" + "k" * 5000))
    (done,) = (await _finals(ws, {20}))[20]
    assert done["type"] == "done", done
    assert all(i["verdict"] == "not_validated" and i["detail"] for i in done["items"]), done
    ws.close()
