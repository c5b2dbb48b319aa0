"""Property: whole messages of the backend protocol, generated from the dataclasses themselves with
hostile values (NaN, huge integers, denormals, lone surrogates, control characters, deep nesting),
sent to a real backend: every request id gets exactly one final answer, nothing is logged with a
traceback, and another client's request running beside them is unaffected."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import threading
import types
import typing
from typing import Any, Literal, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen_backend import protocol
from specgen_backend.codec import valid_id
from specgen_backend.engine import EngineConfig
from specgen_backend.server import Backend, BackendConfig
from websockets.sync.client import connect

from .test_serving import TOKEN

REQUESTS = ["generate", "status_request", "adapters_list", "adapter_load", "adapter_delete", "personalize_start",
            "personalize_status", "personalize_cancel", "personalize_judged", "adapter_versions", "adapter_rollback"]
FINALS = {"result", "error", "status", "adapters", "job", "versions"}

# Raw JSON texts spliced in where a number goes: what json.dumps cannot write but a hostile peer can.
_RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, "-1e-320", "1e-320"]
hostile_numbers = st.sampled_from([float("nan"), 1e-320, -1.0, 0, 2**64, 10**40, 5.000001, 1e308])
hostile_text = st.one_of(st.text(max_size=20), st.sampled_from(["alice\n", "\ud800", "x\x00y", "a\u2028b", "../bob",
                                                               "shared/x", "x" * 300]))
deep = st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=2), max_leaves=40)


def _for_hint(hint: Any) -> st.SearchStrategy:
    """Values for a field of this type: mostly valid, often hostile, sometimes of the wrong type."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return st.one_of([_for_hint(h) for h in typing.get_args(hint)])
    if origin is Literal:
        return st.sampled_from(typing.get_args(hint)) | hostile_text
    if origin is list:
        return st.lists(_for_hint(typing.get_args(hint)[0]), max_size=3) | deep
    if hint is type(None):
        return st.none()
    if dataclasses.is_dataclass(hint):
        return _object(hint)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(min_value=-3, max_value=6) | hostile_numbers
    if hint is float:
        return st.floats(min_value=0, max_value=2) | hostile_numbers
    if hint is str:
        return st.text(alphabet="abc xy=(.", max_size=12) | hostile_text
    raise TypeError(hint)


def _object(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _for_hint(hints[f.name]) for f in dataclasses.fields(cls)}
    required = {f.name: fields[f.name] for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    optional = {k: v for k, v in fields.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


def _message(kind: str) -> st.SearchStrategy:
    cls = protocol.MESSAGES[kind]
    return _object(cls).map(lambda body: {"type": kind, "version": protocol.PROTOCOL_VERSION, **body})


messages = st.lists(st.sampled_from(REQUESTS + ["cancel", "token", "result"]).flatmap(_message), min_size=1, max_size=4)


def _wire(body: dict, raw: str) -> str:
    """``body`` as JSON, with NaN/inf written as a hostile raw token."""
    return re.sub(r"-?Infinity|NaN", raw, json.dumps(body, allow_nan=True))  # one pass: "-Infinity" stays whole


@pytest.fixture(scope="module")
def backend_url(tiny_model):
    """A real backend on its own event loop thread (hypothesis drives it synchronously)."""
    loop = asyncio.new_event_loop()
    backend = Backend(BackendConfig(model=tiny_model, token=TOKEN,
                                    engine=EngineConfig(max_new_tokens=3, max_candidates=2)))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(backend.start(), loop).result(60)
    yield backend.url
    asyncio.run_coroutine_threadsafe(backend.close(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)


def _ready(url):
    ws = connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=None, legacy=True)
    while json.loads(ws.recv(120))["state"] == "loading":
        pass
    return ws


class _Tracebacks(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        if record.exc_info:
            self.records.append(record)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(batch=messages, raw=st.sampled_from(_RAW_NUMBERS))
def test_generated_messages_each_get_one_final_and_break_nobody(backend_url, batch, raw):
    """Every generated request with a usable id is answered exactly once, nothing logs a traceback, and a
    bystander's generate on another connection ends with its result."""
    tracebacks = _Tracebacks()
    logging.getLogger("specgen_backend").addHandler(tracebacks)
    ws, bystander = _ready(backend_url), _ready(backend_url)
    try:
        bystander.send(json.dumps({"type": "generate", "version": 1, "id": "by", "user": "bob",
                                   "context": {"prefix": "x = "}, "max_tokens": 3}))
        expected = set()
        for i, body in enumerate(batch):
            body = {**body, "id": f"m{i}"} if i % 2 == 0 else body  # half keep their generated (hostile) ids
            if body["type"] in REQUESTS and valid_id(body.get("id")):
                if body["id"] in expected:
                    body = {**body, "id": f"m{i}"}
                expected.add(body["id"])
            ws.send(_wire(body, raw))
        ws.send(json.dumps({"type": "status_request", "version": 1, "id": "sentinel"}))
        finals: dict = {}
        seen_sentinel = False
        while not seen_sentinel or not expected <= set(finals):
            frame = json.loads(ws.recv(120))
            if frame["type"] in FINALS and frame.get("reply_to") is not None:
                finals[frame["reply_to"]] = finals.get(frame["reply_to"], 0) + 1
                seen_sentinel |= frame["reply_to"] == "sentinel"
        assert all(finals[i] == 1 for i in expected), (finals, expected)
        while (frame := json.loads(bystander.recv(120)))["type"] not in FINALS or frame.get("reply_to") != "by":
            pass
        assert frame["type"] == "result", frame
    finally:
        ws.close()
        bystander.close()
        logging.getLogger("specgen_backend").removeHandler(tracebacks)
    assert tracebacks.records == [], [r.getMessage() for r in tracebacks.records]
