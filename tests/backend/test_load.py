"""64 concurrent clients on distinct adapters, random cancels and disconnects: every answer arrives once."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import shutil

import pytest
import pytest_asyncio
from specgen_backend.server import Backend, BackendConfig
from websockets.exceptions import ConnectionClosed

from .test_serving import PREFIXES, TOKEN, connect_ready, frame, generate, make_adapter

pytestmark = pytest.mark.asyncio

CLIENTS = 64
REQUESTS_PER_CLIENT = 3


@pytest.fixture(scope="module")
def adapter_root(tiny_model, tmp_path_factory):
    """<root>/user<i>/a: 64 users, each with their own adapter (4 distinct weight sets, copied)."""
    root = tmp_path_factory.mktemp("load-adapters")
    seeds = [root / f"seed{k}" for k in range(4)]
    for k, folder in enumerate(seeds):
        make_adapter(tiny_model, folder, 10 + k)
    for i in range(CLIENTS):
        shutil.copytree(seeds[i % 4], root / f"user{i}" / "a")
    return root


@pytest_asyncio.fixture
async def backend(tiny_model, adapter_root):
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, adapter_root=str(adapter_root), max_adapters=CLIENTS, max_batch=32, max_queue=256))
    await server.start()
    yield server
    await server.close()


async def client(backend, i: int, rng: random.Random, stats: dict) -> None:
    """Load this user's adapter, then send requests; cancel some, drop the connection on some."""
    user = f"user{i}"
    ws = await connect_ready(backend)
    await ws.send(frame("adapter_load", "load", user=user, name="a", path="a"))
    loaded = json.loads(await asyncio.wait_for(ws.recv(), 120))
    assert loaded["type"] == "adapters" and loaded["adapters"] == ["a"], loaded
    for request in range(REQUESTS_PER_CLIENT):
        id = f"{user}-{request}"
        action = rng.choice(["finish", "finish", "finish", "cancel", "disconnect"])
        await ws.send(generate(id, user=user, prefix=rng.choice(PREFIXES), adapters=["a"], n=rng.choice([1, 2]), max_tokens=rng.randint(2, 8)))
        if action == "cancel":
            await ws.send(frame("cancel", id))
        if action == "disconnect":
            await asyncio.sleep(rng.random() * 0.05)
            await ws.close()
            stats["disconnected"] += 1
            ws = await connect_ready(backend)
            continue
        finals = []
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if msg["type"] == "error" and msg["reply_to"] != id:
                stats["protocol_errors"].append(msg)
            if msg.get("reply_to") == id and msg["type"] in ("result", "error"):
                finals.append(msg)
                break
        (answer,) = finals
        if answer["type"] == "error":
            if not (action == "cancel" and answer["error"]["type"] == "cancelled"):
                stats["protocol_errors"].append(answer)
        else:
            assert all(c["adapter"] == "a" for c in answer["candidates"])
        stats["answers"][id] = stats["answers"].get(id, 0) + 1
        stats["expected"].add(id)
    # Nothing else may be pending for this connection: a short wait sees no stray final answers.
    try:
        extra = json.loads(await asyncio.wait_for(ws.recv(), 0.05))
        if extra["type"] in ("result", "error"):
            stats["protocol_errors"].append(extra)
    except (asyncio.TimeoutError, ConnectionClosed):
        pass
    await ws.close()


async def run_round(backend, seed: int) -> dict:
    stats = {"answers": {}, "expected": set(), "protocol_errors": [], "disconnected": 0}
    rng = random.Random(seed)
    await asyncio.wait_for(asyncio.gather(*(client(backend, i, random.Random(rng.random()), stats) for i in range(CLIENTS))), 300)
    return stats


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def _idle(backend) -> None:
    for _ in range(200):
        if backend._scheduler.batch_size == 0 and backend._scheduler.queue_depth == 0:
            return
        await asyncio.sleep(0.05)


async def test_64_clients_get_every_answer_exactly_once(backend):
    """Two rounds of 64 clients: no protocol error, no lost or duplicate answer, nothing held after, memory flat."""
    first = await run_round(backend, 1)
    await _idle(backend)
    gc.collect()
    rss_after_first = _rss_bytes()
    second = await run_round(backend, 2)
    await _idle(backend)
    gc.collect()
    for stats in (first, second):
        assert stats["protocol_errors"] == []
        assert set(stats["answers"]) == stats["expected"] and set(stats["answers"].values()) == {1}
        assert len(stats["expected"]) + stats["disconnected"] == CLIENTS * REQUESTS_PER_CLIENT
    assert first["disconnected"] > 0
    assert backend._scheduler.batch_size == 0 and backend._scheduler.queue_depth == 0 and backend._scheduler._cache is None
    assert backend._scheduler.peak_rows > 8  # the clients really were batched together
    assert _rss_bytes() - rss_after_first < 64 * 2**20  # a second identical round does not grow memory
