"""Property: whole messages of the browser protocol, generated from its dataclasses with hostile
values (NaN, huge integers, lone surrogates, control characters, deep nesting, kernel ids real and
not), sent to a real Jupyter server with the extension, its backend child and a real kernel: every
`complete` gets exactly one final answer, the server logs no traceback, and another tab's request
beside them is answered as usual."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import types
import typing
import urllib.request
from typing import Any, Literal, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from jupyter_specgen import protocol

FINALS = {"done", "error"}
# Raw JSON texts spliced in where a number goes: what json.dumps cannot write but a hostile tab can.
_RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, "-1e-320"]
hostile_numbers = st.sampled_from([float("nan"), 1e-320, -1, 0, 2**64, 10**40, 1e308])
hostile_text = st.one_of(st.text(max_size=20), st.sampled_from(
    ["alice\n", "\ud800", "x\x00y", "a\u2028b", "../../etc/passwd", "x" * 300, "sales.", "df['un"]))
deep = st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=2), max_leaves=40)


def _for_hint(hint: Any, kernel_ids: list[str]) -> st.SearchStrategy:
    """Values for a field of this type: mostly valid, often hostile, sometimes of the wrong type."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return st.one_of([_for_hint(h, kernel_ids) for h in typing.get_args(hint)])
    if origin is Literal:
        return st.sampled_from(typing.get_args(hint)) | hostile_text
    if origin is list:
        return st.lists(_for_hint(typing.get_args(hint)[0], kernel_ids), max_size=3) | deep
    if hint is type(None):
        return st.none()
    if dataclasses.is_dataclass(hint):
        return _object(hint, kernel_ids)
    if hint is bool:
        return st.booleans() | hostile_numbers
    if hint is int:
        return st.integers(min_value=-3, max_value=6) | hostile_numbers
    if hint is float:
        return st.floats(min_value=0, max_value=2) | hostile_numbers
    if hint is str:
        return st.text(alphabet="abc xy=(.[", max_size=12) | hostile_text | st.sampled_from(kernel_ids)
    raise TypeError(hint)


def _object(cls: type, kernel_ids: list[str]) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _for_hint(hints[f.name], kernel_ids) for f in dataclasses.fields(cls) if f.name != "version"}
    required = {f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    optional = {k: v for k, v in fields.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


def _messages(kernel_ids: list[str]) -> st.SearchStrategy:
    # What a tab sends (complete, cancel), and what only the server sends, sent back by a hostile tab.
    kinds = ["complete", "complete", "cancel", "chunk", "done", "shown", "status"]

    def one(kind: str) -> st.SearchStrategy:
        cls = protocol.BROWSER_MESSAGES[kind]
        return _object(cls, kernel_ids).map(lambda body: {"type": kind, "version": protocol.PROTOCOL_VERSION, **body})

    return st.lists(st.sampled_from(kinds).flatmap(one), min_size=1, max_size=4)


def _wire(body: dict, raw: str) -> str:
    """``body`` as JSON, with NaN/inf written as a hostile raw token."""
    return re.sub(r"-?Infinity|NaN", raw, json.dumps(body, allow_nan=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """A `jupyter server` subprocess with the extension (tiny model, short answers) and one kernel."""
    root = tmp_path_factory.mktemp("property-server")
    for d in ("data", "runtime", "config", "notebooks"):
        (root / d).mkdir()
    port, token = _free_port(), secrets.token_hex(8)
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'notebooks'}",
           "--ServerApp.jpserver_extensions=jupyter_specgen=True", f"--SpecgenExtension.model={tiny_model}",
           "--SpecgenExtension.max_tokens=4", "--SpecgenExtension.candidates=2", "--SpecgenExtension.temperature=1.0"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_DATA_DIR": str(root / "data"), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
           "JUPYTER_CONFIG_DIR": str(root / "config")}
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def rest(method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{path}", data=data, method=method,
                                     headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=60) as reply:
            return json.loads(reply.read() or b"null")

    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            try:
                rest("GET", "api/status")
                break
            except OSError:
                assert time.monotonic() < deadline, "jupyter server did not start"
                time.sleep(0.5)
        kernel_id = rest("POST", "api/kernels", {"name": "python3"})["id"]
        yield {"url": f"ws://127.0.0.1:{port}/specgen/ws", "token": token, "kernel_id": kernel_id, "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tab(server):
    ws = connect(server["url"], additional_headers={"Authorization": f"token {server['token']}"}, max_size=None, legacy=True)
    while (status := json.loads(ws.recv(180)))["type"] != "status" or status["state"] != "ready":
        assert status.get("state") != "error", status
    return ws


def _tracebacks(server) -> list[str]:
    text = server["log"].read_text(errors="replace")
    return [block[:800] for block in text.split("Traceback (most recent call last)")[1:]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data(), raw=st.sampled_from(_RAW_NUMBERS))
def test_generated_browser_messages_each_get_one_final_and_break_nobody(server, data, raw):
    """Each generated `complete` given a usable id gets exactly one `done` or `error`; no traceback is
    logged; a bystander tab's `complete` ends with `done`; the hostile tab's connection keeps serving."""
    batch = data.draw(_messages([server["kernel_id"], "0" * 36]))
    before = len(_tracebacks(server))
    ws, bystander = _tab(server), _tab(server)
    try:
        bystander.send(json.dumps({"type": "complete", "version": protocol.PROTOCOL_VERSION, "id": 1, "path": "b.ipynb",
                                   "cell_id": "by", "prefix": "x = ", "kernel_id": server["kernel_id"]}))
        expected = set()
        for i, body in enumerate(batch):
            if body["type"] == "complete" and i % 2 == 0:
                body = {**body, "id": 1_000_000 + i}  # half keep their generated (hostile) ids
                expected.add(body["id"])
            ws.send(_wire(body, raw))
        # A last request on the same tab: answered means the connection survived what came before.
        ws.send(json.dumps({"type": "complete", "version": protocol.PROTOCOL_VERSION, "id": 999, "path": "a.ipynb",
                            "cell_id": "sentinel", "prefix": "y = "}))
        expected.add(999)
        finals: dict = {}
        while not expected <= set(finals):
            frame = json.loads(ws.recv(180))
            if frame["type"] in FINALS and frame.get("reply_to") is not None:
                finals[frame["reply_to"]] = finals.get(frame["reply_to"], 0) + 1
        # One more round trip, so that a second final of any of them would have arrived by now.
        ws.send(json.dumps({"type": "complete", "version": protocol.PROTOCOL_VERSION, "id": 998, "path": "a.ipynb",
                            "cell_id": "sentinel-2", "prefix": "z = "}))
        while (frame := json.loads(ws.recv(180))).get("reply_to") != 998 or frame["type"] not in FINALS:
            if frame["type"] in FINALS and frame.get("reply_to") is not None:
                finals[frame["reply_to"]] = finals.get(frame["reply_to"], 0) + 1
        assert all(finals[i] == 1 for i in expected), (finals, expected)
        while (frame := json.loads(bystander.recv(180)))["type"] not in FINALS or frame.get("reply_to") != 1:
            pass
        assert frame["type"] == "done", frame
    finally:
        ws.close()
        bystander.close()
    assert _tracebacks(server)[before:] == []
