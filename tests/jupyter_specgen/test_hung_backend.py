"""A hung backend (SIGSTOP) has a deadline: a tab's request is answered before the browser's 15 s
provider timeout with "not responding", the status bar says the backend is not responding, and
everything works again after SIGCONT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

from .test_completions import _complete, _final, _open, _service


async def _status(ws, predicate, timeout=60):
    while True:
        frame = json.loads(await asyncio.wait_for(ws.read_message(), timeout))
        if frame["type"] == "status" and predicate(frame):
            return frame


async def test_a_stopped_backend_is_answered_before_the_provider_timeout_and_recovers(jp_serverapp, jp_ws_fetch):
    """SIGSTOP: the request fails with "not responding" within 15 s and tabs are told; SIGCONT: ready again."""
    ws, _ = await _open(jp_ws_fetch)
    pid = _service(jp_serverapp).process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        ws.write_message(_complete(1))
        statuses = []
        while (frame := json.loads(await asyncio.wait_for(ws.read_message(), 30))).get("reply_to") != 1 \
                or frame["type"] not in ("done", "error"):
            statuses += [frame] if frame["type"] == "status" else []
        waited = time.monotonic() - started
        assert frame["type"] == "error" and "not responding" in frame["error"]["message"], frame
        assert waited < 15.0, waited
        if not any("not responding" in f["message"] for f in statuses):
            statuses.append(await _status(ws, lambda f: "not responding" in f["message"], timeout=15))
        assert [f["state"] for f in statuses if "not responding" in f["message"]] == ["error"], statuses
    finally:
        os.kill(pid, signal.SIGCONT)
    await _status(ws, lambda f: f["state"] == "ready", timeout=30)
    ws.write_message(_complete(2))
    last = (await _final(ws, 2))[-1]
    assert last["type"] == "done", last
    ws.close()
