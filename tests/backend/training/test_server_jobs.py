"""Personalize through the backend's websocket: jobs as child processes, progress, judge, publish,
hot-load into the next completion, crash and conflict handling, and users kept apart."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from dataclasses import asdict

import pytest
import pytest_asyncio
from specgen_backend.protocol import PROTOCOL_VERSION
from specgen_backend.server import Backend, BackendConfig
from websockets.asyncio.client import connect

from .conftest import idiom_rate

TOKEN = "jobs-token"

pytestmark = pytest.mark.asyncio


def frame(type, id, **kw):
    return json.dumps({"type": type, "version": PROTOCOL_VERSION, "id": id, **kw})


def examples(items):
    return [asdict(e) for e in items]


@pytest_asyncio.fixture
async def backend(pandas_base, tmp_path):
    server = Backend(BackendConfig(model=pandas_base.path, token=TOKEN, adapter_root=str(tmp_path / "adapters"),
                                   train_steps=120, judge_timeout_s=60))
    await server.start()
    yield server
    await server.close()


async def connect_ready(backend):
    ws = await connect(backend.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=None)
    status = json.loads(await ws.recv())
    while status["state"] == "loading":
        status = json.loads(await asyncio.wait_for(ws.recv(), 60))
    assert status["state"] == "ready", status
    return ws


class Conversation:
    """Sends requests and keeps every frame, so that pushed job frames are not lost while waiting."""

    def __init__(self, ws):
        self.ws = ws
        self.pushed: list[dict] = []  # job frames with reply_to null
        self._answers: dict = {}

    async def _pump(self, timeout):
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if msg["type"] == "job" and msg["reply_to"] is None:
            self.pushed.append(msg["job"])
        elif msg.get("reply_to") is not None and msg["type"] not in ("token", "candidate_end", "status"):
            self._answers[msg["reply_to"]] = msg

    async def request(self, raw, id, timeout=120):
        await self.ws.send(raw)
        while id not in self._answers:
            await self._pump(timeout)
        return self._answers.pop(id)

    async def until(self, predicate, timeout=600):
        """Pump until a pushed job frame satisfies ``predicate``; return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for job in self.pushed[seen:]:
                if predicate(job):
                    return job
            seen = len(self.pushed)
            await self._pump(max(1.0, deadline - loop.time()))

    async def complete(self, id, user, example, **kw):
        context = {"prefix": example.prefix, "preamble": example.spec, "cells": [
            *example.cells_before, {"cell_type": "code", "source": example.prefix}], "active": len(example.cells_before)}
        reply = await self.request(frame("generate", id, user=user, context=context, max_tokens=40, **kw), id)
        assert reply["type"] == "result", reply
        return reply["candidates"]


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


async def test_job_publishes_and_the_next_completion_uses_it(backend, alice_examples):
    """Alice's job streams progress, is judged, publishes v1; her next completions use it and write her idiom."""
    train, heldout = alice_examples
    chat = Conversation(await connect_ready(backend))
    base_out = [(await chat.complete(f"b{i}", "alice", e, personal=True))[0] for i, e in enumerate(heldout)]
    assert all(c["adapter"] is None for c in base_out)  # nothing published yet: the base model

    started = await chat.request(frame("personalize_start", "s", user="alice", train=examples(train),
                                       heldout=examples(heldout), judge=True), "s")
    assert started["type"] == "job" and started["job"]["state"] == "running", started
    judge = await chat.until(lambda j: j["phase"] == "judge" and j["predictions_after"])
    assert len(judge["predictions_before"]) == len(heldout) == len(judge["predictions_after"])
    # The Jupyter side would run them in forks holding the notebooks' data; here: fixed rates.
    answer = await chat.request(frame("personalize_judged", "j", user="alice", before=0.25, after=0.5), "j")
    assert answer["job"]["predictions_after"] == []
    done = await chat.until(lambda j: j["state"] != "running")
    assert done["state"] == "done", done
    report = done["report"]
    assert report["published"] and report["version"] == "v1", report
    assert report["before"]["executable_rate"] == 0.25 and report["after"]["executable_rate"] == 0.5
    train_steps = [j["step"] for j in chat.pushed if j["phase"] == "train"]
    assert train_steps[-1] == 120 and train_steps == sorted(train_steps)  # progress streamed in order

    out = [(await chat.complete(f"a{i}", "alice", e, personal=True))[0] for i, e in enumerate(heldout)]
    assert all(c["adapter"] == "personal" for c in out)
    base_rate = idiom_rate([c["text"] for c in base_out], heldout)
    adapter_rate = idiom_rate([c["text"] for c in out], heldout)
    print(f"\nthrough the backend, greedy on {len(heldout)} held-out cells: idiom rate base {base_rate:.2f}, "
          f"published adapter {adapter_rate:.2f}; held-out {report['before']} -> {report['after']}")
    assert adapter_rate >= base_rate + 0.25

    versions = await chat.request(frame("adapter_versions", "v", user="alice"), "v")
    (personal,) = versions["adapters"]
    assert personal["name"] == "personal" and personal["current"] == "v1"
    assert personal["versions"][0]["metrics"]["executable_rate"] == 0.5
    # Bob sees none of it: no versions, base-model completions, nothing to roll back.
    assert (await chat.request(frame("adapter_versions", "vb", user="bob"), "vb"))["adapters"] == []
    assert (await chat.complete("bob", "bob", heldout[0], personal=True))[0]["adapter"] is None
    refused = await chat.request(frame("adapter_rollback", "rb", user="bob"), "rb")
    assert refused["error"]["type"] == "bad_request" and "bob" in refused["error"]["message"]
    assert (await chat.request(frame("personalize_status", "sb", user="bob"), "sb"))["job"] is None
    await chat.ws.close()


async def test_crash_keeps_the_adapter_in_service_and_a_second_job_is_refused(backend, alice_examples, tmp_path):
    """A training process killed mid-job fails the job; v1 stays in service, byte for byte, and serves."""
    train, heldout = alice_examples
    chat = Conversation(await connect_ready(backend))
    first = await chat.request(frame("personalize_start", 1, user="alice", train=examples(train), steps=4), 1)
    assert first["job"]["state"] == "running"
    assert (await chat.until(lambda j: j["state"] != "running"))["state"] == "done"
    v1 = backend._runner.store.current("alice", "personal")
    digest = _digest(v1.path)

    chat.pushed.clear()
    second = await chat.request(frame("personalize_start", 2, user="alice", train=examples(train), steps=400), 2)
    assert second["job"]["state"] == "running"
    await chat.until(lambda j: j["phase"] == "train" and j["step"] >= 2)
    # Meanwhile a concurrent request for the same user is refused, not interleaved.
    conflict = await chat.request(frame("personalize_start", 3, user="alice", train=examples(train)), 3)
    assert conflict["type"] == "error" and conflict["error"]["type"] == "job_running", conflict
    os.kill(backend._runner.pid("alice"), signal.SIGKILL)  # the injected crash
    failed = await chat.until(lambda j: j["state"] != "running")
    assert failed["state"] == "failed" and "signal 9" in failed["error"] and "unchanged" in failed["error"]
    current = backend._runner.store.current("alice", "personal")
    assert current.version == "v1" and _digest(current.path) == digest
    assert backend._runner.store.versions("alice", "personal") == ["v1"]
    candidates = await chat.complete("after", "alice", heldout[0], personal=True)
    assert candidates[0]["adapter"] == "personal"

    # A job of the same user started by another process (the CLI) holds the store lock: refused too.
    with backend._runner.store.lock("alice"):
        chat.pushed.clear()
        await chat.request(frame("personalize_start", 4, user="alice", train=examples(train), steps=4), 4)
        locked = await chat.until(lambda j: j["state"] != "running")
    assert locked["state"] == "failed" and "already running" in locked["error"]
    await chat.ws.close()


@pytest.mark.timeout(900)  # two jobs, the second with 2 variants of 60 steps each, on 2 shared cores
async def test_variants_rollback_and_bad_requests(backend, alice_examples):
    """K=2 variants serve alternate rows of one request; rollback goes back; bad requests are answered."""
    train, heldout = alice_examples
    chat = Conversation(await connect_ready(backend))
    for id, steps in (("v1", 4), ("v2", 4)):
        chat.pushed.clear()
        await chat.request(frame("personalize_start", id, user="alice", train=examples(train), steps=steps,
                                 variants=2 if id == "v2" else 0), id)
        done = await chat.until(lambda j: j["state"] != "running")
        assert done["state"] == "done" and done["report"]["published"], done
    assert done["report"]["variants_version"] == "v1" and len(done["report"]["variant_groups"]) == 2
    candidates = await chat.complete("k", "alice", heldout[0], personal=True, n=4, temperature=0.8)
    assert [c["adapter"] for c in candidates] == ["variant-0", "variant-1", "variant-0", "variant-1"]

    back = await chat.request(frame("adapter_rollback", "r", user="alice", adapter="personal"), "r")
    assert {a["name"]: a["current"] for a in back["adapters"]} == {"personal": "v1", "variants": "v1"}
    nothing = await chat.request(frame("adapter_rollback", "r2", user="alice", adapter="personal"), "r2")
    assert nothing["error"]["type"] == "bad_request" and "first version" in nothing["error"]["message"]

    empty = await chat.request(frame("personalize_start", "e", user="alice", train=[]), "e")
    assert empty["error"]["type"] == "bad_request" and "no training examples" in empty["error"]["message"]
    bad_user = await chat.request(frame("personalize_start", "u", user="../bob", train=examples(train)), "u")
    assert bad_user["error"]["type"] == "malformed"
    malformed = await chat.request(frame("personalize_start", "m", user="alice", train=[{"notebook": 1}]), "m")
    assert malformed["error"]["type"] == "malformed" and "train[0].notebook" in malformed["error"]["message"]
    # Only personalize_start may exceed the 1 MiB frame limit (it carries the user's examples).
    big = [{"notebook": "n.ipynb", "target": "x" * 4000}] * 600  # about 2.4 MB
    upload = await chat.request(frame("personalize_start", "big", user="alice", train=big, variants=99), "big")
    # past the size gate: refused for its variants (by the codec's range), with its id
    assert upload["error"]["type"] in ("malformed", "bad_request") and "variants" in upload["error"]["message"], upload
    padded = await chat.request(frame("adapters_list", "pad", user="alice", pad="x" * (2 << 20)), "pad")
    assert padded["error"]["type"] == "too_large" and "personalize_start" in padded["error"]["message"]
    stray = await chat.request(frame("personalize_judged", "x", user="alice", before=0.1), "x")
    assert stray["error"]["type"] == "bad_request"
    await chat.ws.close()
