"""The browser protocol: one definition in Python, TypeScript generated from it."""

from __future__ import annotations

import json

import pytest

from jupyter_specgen import protocol
from jupyter_specgen.protocol_typescript import TARGET, render


def test_typescript_types_are_generated_from_the_python_protocol():
    """labextension/src/protocol.ts is exactly what the generator writes: the two ends cannot drift."""
    assert TARGET.read_text() == render(), "run `python -m jupyter_specgen.protocol_typescript` and commit the result"


def test_every_message_has_a_typescript_interface():
    """Each message class appears in the generated TypeScript with its type tag."""
    text = render()
    for tag, cls in protocol.BROWSER_MESSAGES.items():
        assert f"export interface I{cls.__name__} {{\n  type: '{tag}';" in text


def test_complete_round_trips():
    """A complete request survives encode → decode."""
    message = protocol.Complete(id=3, path="a.ipynb", cell_id="c", prefix="x = ", cells=[protocol.Cell("code", "y = 1")], active=0, kernel_id="k")
    assert protocol.decode(protocol.encode(message)) == message


def test_server_messages_are_not_accepted_from_the_browser_by_type_alone():
    """Decoding is by tag: a `done` frame decodes to Done, and a wrong field type is refused."""
    frame = {"type": "done", "version": protocol.PROTOCOL_VERSION, "reply_to": 1, "items": [{"text": "x", "verdict": "maybe"}]}
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode(json.dumps(frame))
    assert info.value.error_type == "malformed" and "verdict" in info.value.message
