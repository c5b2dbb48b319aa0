"""The backend wire protocol: round trips and the errors bad frames get."""

from __future__ import annotations

import json

import pytest
from specgen_backend import protocol
from specgen_backend.protocol import Cell, CompletionContext, Generate, ProtocolError


def _frame(**fields) -> str:
    return json.dumps({"version": protocol.PROTOCOL_VERSION, **fields})


def test_generate_round_trips():
    """A Generate survives encode → decode unchanged, nested dataclasses included."""
    message = Generate(
        id=7, user="alice", n=3, adapters=["alice/a"], context=CompletionContext(prefix="x = ", cells=[Cell("markdown", "# hi")])
    )
    assert protocol.decode(protocol.encode(message)) == message


@pytest.mark.parametrize(
    ("raw", "error_type"),
    [
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
        (b"\xff\xfe", "malformed"),
        (_frame(type="generate", id=1, user="u"), "malformed"),  # context missing
        (_frame(type="generate", id=1, user="u", context={"prefix": 3}), "malformed"),
        (_frame(type="generate", id=1, user="u", n="3", context={"prefix": ""}), "malformed"),
        (_frame(type="explode", id=1), "unknown_type"),
        (json.dumps({"type": "cancel", "id": 1, "version": 99}), "version"),
        (_frame(type="cancel", id=1, pad="x" * (protocol.MAX_MESSAGE_BYTES + 1)), "too_large"),
    ],
)
def test_bad_frames_raise_protocol_errors(raw, error_type):
    """Each kind of bad frame is named by its error type, with a message saying what is wrong."""
    with pytest.raises(ProtocolError) as info:
        protocol.decode(raw)
    assert info.value.error_type == error_type
    assert info.value.message


def test_errors_keep_the_request_id():
    """An error about a request that had a readable id answers that id."""
    with pytest.raises(ProtocolError) as info:
        protocol.decode(_frame(type="generate", id=42, user="u"))
    assert info.value.reply_to == 42


def test_unknown_fields_are_ignored():
    """A newer peer's extra fields do not break an older one within a version."""
    message = protocol.decode(_frame(type="cancel", id=1, priority="high"))
    assert message == protocol.Cancel(id=1)
