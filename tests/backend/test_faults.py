"""Bad input never breaks the backend: the codec under hypothesis, and hostile clients on a real socket."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen_backend import protocol
from specgen_backend.protocol import PROTOCOL_VERSION, ProtocolError
from specgen_backend.server import Backend, BackendConfig

from .test_serving import TOKEN, connect_ready, frame, generate

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
TYPES = sorted(protocol.MESSAGES) + ["nope", ""]
# Objects shaped like requests (a known type, the right version) with random fields, so that
# decoding gets past the envelope checks into field validation.
request_like = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES), "version": st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, "1"])},
    optional={"id": json_values, "user": json_values, "context": json_values, "n": json_values, "adapters": json_values,
              "name": json_values, "path": json_values, "deadline_ms": json_values, "extra": json_values},  # fmt: skip
)
frames = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(json.dumps),
    request_like.map(json.dumps),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames)
def test_decode_returns_a_message_or_a_protocol_error(raw):
    """Any frame decodes to a known message or raises ProtocolError, never anything else."""
    try:
        message = protocol.decode(raw)
    except ProtocolError as exc:
        assert exc.error_type in ("malformed", "unknown_type", "version", "too_large")
        protocol.encode(protocol.error_reply(exc.reply_to, exc.error_type, exc.message))  # the reply encodes
    else:
        assert type(message) in protocol.MESSAGES.values()
        assert protocol.decode(protocol.encode(message)) == message  # and round-trips


@pytest_asyncio.fixture
async def backend(tiny_model):
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, max_message_bytes=4096))
    await server.start()
    yield server
    await server.close()


async def _reply(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 60))


@pytest.mark.asyncio
async def test_hostile_frames_are_answered_and_serving_goes_on(backend):
    """Binary, invalid UTF-8, oversized, unknown fields, missing adapter: each answered; then a request works."""
    ws = await connect_ready(backend)
    await ws.send(b"\xff\xfe not utf-8")
    assert (await _reply(ws))["error"]["type"] == "malformed"
    await ws.send(json.dumps({"type": "status_request", "version": 1, "id": 1}).encode())  # binary but valid
    assert (await _reply(ws))["type"] == "status"
    await ws.send("x" * 5000)
    assert (await _reply(ws))["error"]["type"] == "too_large"
    await ws.send("{not json")
    assert (await _reply(ws))["error"]["type"] == "malformed"
    await ws.send(frame("adapters_list", 2, user="alice", surprise={"a": [1]}))
    assert (await _reply(ws))["type"] == "adapters"
    await ws.send(generate(3, adapters=["ghost"]))
    missing = await _reply(ws)
    assert missing["error"]["type"] == "unknown_adapter" and "ghost" in missing["error"]["message"]
    await ws.send(generate(4, max_tokens=3, unknown_field=True))
    while (msg := await _reply(ws))["type"] in ("token", "candidate_end"):
        pass
    assert msg["type"] == "result" and msg["reply_to"] == 4
    await ws.close()


def _random_frames(rng: random.Random, count: int) -> list:
    """Random bytes, random text, and request-shaped objects with fields of random types."""
    values = [None, True, 0, -1, 2**70, 1.5, "", "x", "shared/../x", [], ["a"], {}, {"prefix": 3}, {"prefix": "x = "}]
    out = []
    for _ in range(count):
        kind = rng.randrange(3)
        if kind == 0:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
        elif kind == 1:
            out.append("".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(64))))
        else:
            body = {"type": rng.choice(TYPES), "version": rng.choice([PROTOCOL_VERSION, PROTOCOL_VERSION, 2])}
            for key in rng.sample(["id", "user", "context", "n", "adapters", "name", "path", "max_tokens", "extra"], rng.randrange(6)):
                body[key] = rng.choice(values)
            out.append(json.dumps(body))
    return out


@pytest.mark.asyncio
async def test_random_frames_over_a_socket(backend):
    """Hundreds of random frames on one connection: each gets at most one answer, the connection survives."""
    ws = await connect_ready(backend)
    samples = _random_frames(random.Random(0), 300)
    for raw in samples:
        await ws.send(raw)
    await ws.send(frame("status_request", "last"))
    while True:
        msg = await _reply(ws)
        assert msg["type"] in ("error", "status", "token", "candidate_end", "result", "adapters")
        if msg.get("reply_to") == "last":
            break
    await ws.close()


@pytest.mark.asyncio
async def test_a_client_that_never_reads_does_not_stall_others(backend):
    """One connection floods requests and never reads; another client is still served promptly."""
    sink = await connect_ready(backend)
    for i in range(12):
        await sink.send(generate(f"flood{i}", n=4, max_tokens=8, temperature=1.0))
    ws = await connect_ready(backend)
    await ws.send(generate("mine", user="bob", max_tokens=3))
    while (msg := await _reply(ws))["type"] != "result":
        assert msg["type"] in ("token", "candidate_end", "status")
    await sink.close()
    await ws.close()
