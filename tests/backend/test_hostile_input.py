"""One client's bad input never fails another's work: hostile numbers and strings at the codec, a
corrupt rollback, an adapter root that cannot be created, all on a real backend with another user's
stream running beside them."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
import pytest_asyncio
from specgen_backend.server import Backend, BackendConfig
from specgen_backend.training.store import AdapterStore

from .test_serving import TOKEN, connect_ready, final, frame, generate, make_adapter

pytestmark = pytest.mark.asyncio

# Values a hostile or buggy client writes into a numeric field, as raw JSON text.
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, "-1", "1e-320", "18446744073709551616"]
NUMERIC_FIELDS = ["n", "max_tokens", "temperature", "deadline_ms"]


def _raw_generate(id, field, raw_value):
    """A generate frame with ``field`` set to the literal JSON text ``raw_value``."""
    body = json.loads(generate(id, max_tokens=4))
    body[field] = "@@"
    return json.dumps(body).replace('"@@"', raw_value)


@pytest_asyncio.fixture
async def backend(tiny_model, tmp_path):
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, adapter_root=str(tmp_path / "adapters")))
    await server.start()
    yield server
    await server.close()


async def _stream(ws, id, user="bob", max_tokens=24):
    """Run a generate of ``user`` to its end; returns the final frame."""
    await ws.send(generate(id, user=user, max_tokens=max_tokens, temperature=1.0))
    return await final(ws, id, timeout=120)


async def test_hostile_numbers_and_strings_are_malformed_and_others_are_unaffected(backend):
    """NaN, ±Infinity, 1e400, 400-digit integers, denormals, negatives in every numeric field, lone
    surrogates, control characters and huge ids: each a ``malformed`` naming the field, on a connection
    that stays open, while another user's stream ends with its result."""
    ws, other = await connect_ready(backend), await connect_ready(backend)
    bystander = asyncio.create_task(_stream(other, "bob-1"))
    cases = [(f"{f}={v[:12]}", _raw_generate(f"{f}-{i}", f, v), f"{f}-{i}", f)
             for f in NUMERIC_FIELDS for i, v in enumerate(HOSTILE_NUMBERS)]
    cases += [
        ("surrogate", generate("sur", prefix="x = '\ud800'"), "sur", "context.prefix"),
        ("control user", generate("ctl", user="alice\n"), "ctl", "user"),
        ("active", generate("act", prefix="x").replace('"prefix"', '"active":1' + "0" * 400 + ',"prefix"'), "act", "active"),
        ("huge id", generate("x" * 500_000), None, "id"),
    ]
    for label, raw, id, path in cases:
        await ws.send(raw)
        answer = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert answer["type"] == "error", (label, answer)
        assert answer["reply_to"] == id, label
        assert answer["error"]["type"] == "malformed", (label, answer)
        assert path in answer["error"]["message"] or "JSON" in answer["error"]["message"], (label, answer)
        assert len(answer["error"]["message"]) < 1000, label
    result = await bystander
    assert result["type"] == "result", result
    await ws.send(generate("after", max_tokens=3))
    assert (await final(ws, "after"))["type"] == "result"  # the connection was never closed
    await ws.close()
    await other.close()


async def test_a_corrupt_rollback_is_refused_while_another_user_streams(backend, tiny_model, tmp_path):
    """Rolling back to a version with corrupt weights: a clear ``bad_request``, ``current`` unchanged, the
    connection and another user's stream go on, and the user's completions still use the version in service."""
    store = AdapterStore(tmp_path / "adapters")
    for seed in (1, 2):
        make_adapter(tiny_model, tmp_path / f"a{seed}", seed)
        store.publish("alice", "personal", tmp_path / f"a{seed}")
    weights = store._version("alice", "personal", "v1").path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    ws, other = await connect_ready(backend), await connect_ready(backend)
    bystander = asyncio.create_task(_stream(other, "bob-1", max_tokens=32))
    await ws.send(frame("adapter_rollback", "rb", user="alice", adapter="personal"))
    answer = await final(ws, "rb")
    assert answer["type"] == "error" and answer["error"]["type"] == "bad_request", answer
    assert "corrupt" in answer["error"]["message"] and "v2 stays in service" in answer["error"]["message"]
    assert store.current("alice", "personal").version == "v2"
    assert (await bystander)["type"] == "result"
    await ws.send(frame("adapter_versions", "vs", user="alice"))
    versions = await final(ws, "vs")
    assert versions["type"] == "versions" and versions["adapters"][0]["current"] == "v2"
    await ws.send(generate("mine", personal=True, max_tokens=3))
    mine = await final(ws, "mine")
    assert mine["type"] == "result" and {c["adapter"] for c in mine["candidates"]} == {"personal"}, mine
    await ws.close()
    await other.close()


async def test_an_adapter_root_that_cannot_be_created_is_reported_not_fatal(tiny_model, tmp_path):
    """An adapter root under a regular file: the backend starts and serves, its status says personal
    adapters are off and which setting to fix, and personalize requests are answered with that reason."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, adapter_root=str(blocker / "adapters")))
    await server.start()
    try:
        ws = await connect_ready(server)
        await ws.send(frame("status_request", "st"))
        while (status := json.loads(await asyncio.wait_for(ws.recv(), 60))).get("reply_to") != "st":
            pass
        assert status["state"] == "ready" and "SpecgenExtension.adapter_root" in status["message"], status
        assert str(blocker / "adapters") in status["message"]
        await ws.send(frame("personalize_status", "ps", user="alice"))
        refused = await final(ws, "ps")
        assert refused["error"]["type"] == "bad_request" and "adapter_root" in refused["error"]["message"]
        await ws.send(generate("g", max_tokens=3))
        assert (await final(ws, "g"))["type"] == "result"
        await ws.close()
    finally:
        await server.close()


async def test_cli_with_an_uncreatable_adapter_root_keeps_running(tiny_model, tmp_path):
    """`specgen-backend serve --adapter-root <under a file>` reports listening instead of exiting with code 1."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "specgen_backend", "serve", "--model", tiny_model, "--port", "0", "--device", "cpu",
        "--adapter-root", str(blocker / "adapters"), stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "SPECGEN_BACKEND_TOKEN": TOKEN})
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert json.loads(line)["event"] == "listening", line
        assert proc.returncode is None
    finally:
        proc.kill()
        await proc.wait()

