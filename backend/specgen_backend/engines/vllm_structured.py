"""The live-state constraint (``protocol.Constraint``) as a regular expression for vLLM's
structured outputs: the completion's first identifier is one of the heads, then anything.

The native engine holds each row to the heads token by token (``constraint.py``); vLLM's
structured outputs hold a request to a regular expression over its text, which expresses the same
rule: a required constraint is "one head's rest, then (for a head ending in an identifier
character) nothing or a character that cannot continue an identifier, then anything"; an optional
one also allows a completion that begins (after spaces) with anything but an identifier (or a
string, when some head is a string).
What the native engine adds and this does not: releasing a row whose head no token can continue
(vLLM's grammar then ends the row), and the syntax masks (brackets, runs of operators).
"""

from __future__ import annotations

from typing import Optional

from ..constraint import _rests
from ..protocol import Constraint

__all__ = ["constraint_regex"]

_ANY = r"[\s\S]*"
_NOT_IDENT = r"[^A-Za-z0-9_]"  # constraint.IDENT_CHARS
_SPECIAL = frozenset(r"\.^$|?*+()[]{}/-")


def _literal(text: str) -> str:
    """``text`` matched literally (escapes only what regex engines treat as special; some of them
    refuse Python's ``re.escape`` of ordinary characters)."""
    return "".join(
        "\\n" if c == "\n" else "\\t" if c == "\t" else "\\" + c if c in _SPECIAL else c
        for c in text
    )


def constraint_regex(constraint: Constraint) -> Optional[str]:
    """The regex of ``constraint`` (None: nothing to hold the completion to)."""
    rests = _rests(constraint)
    if not rests:
        return None  # no head fits what was typed: the native engine decodes freely too
    heads = []
    for rest, ends_ident in rests:
        tail = f"({_NOT_IDENT}{_ANY})?" if ends_ident else _ANY
        heads.append(_literal(rest) + tail)
    head = "(" + "|".join(heads) + ")"
    if constraint.required or constraint.typed:
        return head
    # Optional: nothing, or something that does not begin an identifier (nor a string, when a head
    # is a string: constraint._holds), or a head (after spaces).
    quotes = "".join(q for q in ("'", '"') if any(rest.startswith(q) for rest, _ in rests))
    not_ident_start = f"[^A-Za-z_ {quotes}]"
    return f" *(|{not_ident_start}{_ANY}|{head})"

