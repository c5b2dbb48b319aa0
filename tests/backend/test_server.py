"""The backend websocket server with a real tiny model: streaming, cancel, bad input, auth."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from specgen_backend.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION
from specgen_backend.server import Backend, BackendConfig
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

TOKEN = "test-token"

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def backend(tiny_model):
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN))
    await server.start()
    yield server
    await server.close()


async def _connect(backend, token=TOKEN):
    ws = await connect(backend.url, additional_headers={"Authorization": f"Bearer {token}"})
    status = json.loads(await ws.recv())
    while status["state"] == "loading":
        status = json.loads(await asyncio.wait_for(ws.recv(), 60))
    assert status["state"] == "ready", status
    return ws


def _generate(id, **kw):
    body = {"type": "generate", "version": PROTOCOL_VERSION, "id": id, "user": "alice",
            "context": {"prefix": "def add(a, b):\n    return", "suffix": ""}}  # fmt: skip
    body.update(kw)
    return json.dumps(body)


async def _until_final(ws, id):
    """Frames for request ``id`` up to and including its final answer."""
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if frame.get("reply_to") == id:
            frames.append(frame)
            if frame["type"] in ("result", "error"):
                return frames


async def test_generate_streams_tokens_then_n_candidates(backend):
    """A request gets token frames for each candidate, then one result with n candidates."""
    ws = await _connect(backend)
    await ws.send(_generate(1, n=3, max_tokens=12, temperature=1.0))
    frames = await _until_final(ws, 1)
    result = frames[-1]
    assert result["type"] == "result"
    assert len(result["candidates"]) == 3
    tokens = [f for f in frames if f["type"] == "token"]
    assert {f["candidate"] for f in tokens} == {0, 1, 2}
    for c in result["candidates"]:
        assert c["finish_reason"] in ("stop", "length") and c["logprob"] < 0
    await ws.close()


async def test_greedy_is_deterministic(backend):
    """Temperature 0 gives the same text for the same context every time."""
    ws = await _connect(backend)
    texts = []
    for i in (1, 2):
        await ws.send(_generate(i, max_tokens=10))
        texts.append((await _until_final(ws, i))[-1]["candidates"][0]["text"])
    assert texts[0] == texts[1]
    await ws.close()


async def test_cancel_stops_generation(backend):
    """A cancel ends a long generation early with a `cancelled` error, and the server keeps serving."""
    ws = await _connect(backend)
    await ws.send(_generate("long", max_tokens=128, temperature=1.0))
    first = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert first["type"] == "token", first
    await ws.send(json.dumps({"type": "cancel", "version": PROTOCOL_VERSION, "id": "long"}))
    frames = await _until_final(ws, "long")
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["type"] == "cancelled", frames[-1]
    assert len([f for f in frames if f["type"] == "token"]) < 128
    await ws.send(_generate(2, max_tokens=4))
    assert (await _until_final(ws, 2))[-1]["type"] == "result"
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "error_type"),
    [
        ("{not json", "malformed"),
        (b"\xc3\x28 invalid utf-8", "malformed"),
        (json.dumps({"type": "teleport", "version": PROTOCOL_VERSION, "id": 5}), "unknown_type"),
        (json.dumps({"type": "cancel", "version": 0, "id": 5}), "version"),
        (json.dumps({"type": "generate", "version": PROTOCOL_VERSION, "id": 5, "user": "u", "context": {"prefix": "x" * (MAX_MESSAGE_BYTES + 10)}}), "too_large"),
        (_generate(5, adapters=["bob/private"]), "unknown_adapter"),
    ],
    ids=["not-json", "invalid-utf8", "unknown-type", "wrong-version", "oversized", "unknown-adapter"],
)
async def test_bad_frames_get_errors_and_the_connection_keeps_serving(backend, frame, error_type):
    """Malformed, unknown, wrong-version and oversized frames are answered; the next request works."""
    ws = await _connect(backend)
    await ws.send(frame)
    reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert reply["type"] == "error" and reply["error"]["type"] == error_type, reply
    assert reply["error"]["message"]
    await ws.send(_generate(6, max_tokens=3))
    assert (await _until_final(ws, 6))[-1]["type"] == "result"
    await ws.close()


async def test_wrong_token_is_refused(backend):
    """Without the shared token the websocket upgrade is refused with 401."""
    with pytest.raises(InvalidStatus) as info:
        await connect(backend.url, additional_headers={"Authorization": "Bearer nope"})
    assert info.value.response.status_code == 401


async def test_missing_model_reports_how_to_fix_it(tmp_path):
    """A model that cannot be loaded puts the backend in `error` naming the setting; nothing hangs."""
    server = Backend(BackendConfig(model=str(tmp_path / "no-such-model"), token=TOKEN))
    await server.start()
    try:
        ws = await connect(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
        status = json.loads(await ws.recv())
        while status["state"] == "loading":
            status = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert status["state"] == "error"
        assert "SpecgenExtension.model" in status["message"]
        await ws.send(_generate(1))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["error"]["type"] == "model_unavailable"
        await ws.close()
    finally:
        await server.close()


async def test_uncached_hub_id_fails_fast_offline(tmp_path, monkeypatch):
    """A hub id that is not cached, with the hub unreachable, fails within seconds with the fix."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    server = Backend(BackendConfig(model="someone/not-a-real-model-xyz", token=TOKEN))
    await server.start()
    try:
        ws = await connect(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
        status = json.loads(await ws.recv())
        while status["state"] == "loading":
            status = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert status["state"] == "error" and "SpecgenExtension.model" in status["message"]
        await ws.close()
    finally:
        await server.close()
