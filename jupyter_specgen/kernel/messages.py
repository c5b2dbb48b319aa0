"""The comm protocol between the server extension and the kernel extension.

Defined once, here, and used by both ends: the kernel extension (``extension.py``) decodes the
requests and encodes the replies, the server side (``jupyter_specgen.kernel_client``) does the
opposite. It reuses the codec of the backend protocol (``specgen_backend.protocol``: strict on
what it needs, lenient on unknown fields, a ``type`` tag and a ``version`` on every message).

Each comm message's ``data`` is one message object. Every request carries an ``id`` chosen by
the server; every answer names it in ``reply_to`` and is final: a ``*_reply`` or an ``error``.

Server → kernel: ``specs``, ``validate``, ``log``, ``cursor``.
Kernel → server: ``specs_reply``, ``validate_reply``, ``log_reply``, ``cursor_reply``, ``error``.

Kept importable with the standard library alone: the kernel may not have the server's
dependencies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional, Union

from specgen_backend.protocol import (
    PROTOCOL_VERSION,
    Error,
    ErrorInfo,
    ProtocolError,
    decode as _decode,
    encode as _encode,
    error_reply,
)

__all__ = [
    "COMM_TARGET",
    "PROTOCOL_VERSION",
    "MAX_KERNEL_MESSAGE_BYTES",
    "SpecKind",
    "Column",
    "Spec",
    "VerdictStatus",
    "Verdict",
    "LogEntry",
    "SpecsRequest",
    "MAX_VALIDATE_CANDIDATES",
    "ValidateRequest",
    "LogRequest",
    "CursorKind",
    "CursorRequest",
    "CursorReply",
    "SpecsReply",
    "ValidateReply",
    "LogReply",
    "Error",
    "ErrorInfo",
    "ProtocolError",
    "KERNEL_MESSAGES",
    "decode",
    "to_data",
    "error_reply",
]

# The comm target the kernel extension registers and the server opens.
COMM_TARGET = "jupyter_specgen"

# Comm messages travel inside Jupyter messages whose size nothing else bounds; this bounds ours.
MAX_KERNEL_MESSAGE_BYTES = 4 << 20

SpecKind = Literal[
    "dataframe",  # pandas.DataFrame
    "series",  # pandas.Series
    "array",  # numpy.ndarray (and anything else with shape + dtype)
    "tensor",  # torch.Tensor
    "container",  # list, tuple, set, frozenset, dict, deque
    "callable",  # functions, methods, classes
    "module",
    "scalar",  # None, bool, int, float, complex, str, bytes
    "object",  # anything else
]


# ----------------------------------------------------------------------------------------------
# Payload pieces


@dataclass(frozen=True)
class Column:
    """One column of a dataframe."""

    name: str
    dtype: str


@dataclass(frozen=True)
class Spec:
    """A bounded description of one value of the kernel, as execution revealed it.

    Only the fields that apply to ``kind`` are filled. ``truncated`` says that something was
    left out (too many columns, a budget ran out, a ``repr`` that raised or hung); ``note`` says
    what.
    """

    name: str  # the variable name, or an expression such as "<value>"
    type: str  # qualified type name, e.g. "pandas.DataFrame"
    kind: SpecKind = "object"
    shape: list[int] = field(default_factory=list)  # dataframe/series/array/tensor
    dtype: str = ""  # series/array/tensor
    columns: list[Column] = field(default_factory=list)  # dataframe (capped)
    length: Optional[int] = None  # containers, str, bytes
    element_type: str = ""  # containers: "int", "str | float", "dict[str, int]"
    signature: str = ""  # callables: "(x, y=1)"
    doc: str = ""  # callables, modules: the first line of the docstring
    examples: str = ""  # a few example rows / elements / the value's repr (bounded)
    truncated: bool = False
    note: str = ""


VerdictStatus = Literal[
    "ran",  # the cell ran to the end
    "raised",  # an exception escaped the cell (guards refusing something raise PermissionError)
    "timeout",  # killed at the wall-clock limit
    "crashed",  # the child died without reporting (a signal, the CPU limit)
    "not_validated",  # not run: no fork on this platform, the kernel stayed busy, ...
    "incomplete",  # an unfinished statement (codeop): closed with ``pass``/brackets, that ran
    "defined",  # the cursor is in a function body: defined, no call of it found to exercise it
]


@dataclass(frozen=True)
class Verdict:
    """What running one candidate in a fork of the kernel showed."""

    index: int  # position of the candidate in the request
    status: VerdictStatus
    error_type: str = ""  # "KeyError"
    message: str = ""  # the exception's message, or why it was not validated (bounded)
    line: int = 0  # 1-based line of the cell (prefix + candidate + suffix) that raised; 0: unknown
    stdout: str = ""  # bounded
    stderr: str = ""  # bounded
    value: Optional[Spec] = None  # the value of the cell's last expression, if it has one
    assigned: list[Spec] = field(default_factory=list)  # names the cell assigned, after it ran
    refused: list[str] = field(default_factory=list)  # guard events refused, e.g. "open x.txt 'w'"
    elapsed_ms: float = 0.0  # fork to report


@dataclass(frozen=True)
class LogEntry:
    """One cell the user ran, with the state it read and the state it left."""

    execution_count: int
    code: str  # bounded
    success: bool
    error: str = ""  # "ZeroDivisionError: division by zero"
    read: list[Spec] = field(default_factory=list)  # names the cell referred to, before it ran
    assigned: list[Spec] = field(default_factory=list)  # names it assigned, after it ran
    started: float = 0.0  # time.time() at the start
    duration_ms: float = 0.0


# ----------------------------------------------------------------------------------------------
# Requests (server → kernel)


@dataclass(frozen=True)
class SpecsRequest:
    """Describe ``names`` and the names that ``code`` refers to (found by parsing it)."""

    type: ClassVar[str] = "specs"
    id: Union[int, str]
    names: list[str] = field(default_factory=list)
    code: str = ""
    budget_ms: int = 50  # what does not fit is left out and the reply says so
    max_rows: int = 3  # example rows / elements per value
    version: int = PROTOCOL_VERSION


# Children one ``validate`` forks at once; the server sends no more than this in one request.
MAX_VALIDATE_CANDIDATES = 16


@dataclass(frozen=True)
class ValidateRequest:
    """Run ``prefix + candidate + suffix`` for each candidate in a fork of the kernel.

    All candidates are forked at once from the same snapshot and run in parallel (at most
    ``MAX_VALIDATE_CANDIDATES``; the rest are answered "not_validated").
    """

    type: ClassVar[str] = "validate"
    id: Union[int, str]
    candidates: list[str]
    prefix: str = ""
    suffix: str = ""
    timeout_ms: int = 2000  # wall clock per child; the CPU limit is derived from it
    memory_mb: int = 1024  # address space a child may add to what it inherits
    # time.time() * 1000 after which the request is stale: a kernel that picks it up later
    # (it was busy) answers "not_validated" without forking. 0: no deadline.
    deadline_ms: float = 0.0
    # The sources of the notebook's code cells. When the cursor (at the end of ``prefix``) is in
    # a function or method body, the calls of it found there are made after the cell ran.
    notebook: list[str] = field(default_factory=list)
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class LogRequest:
    """Return the last ``limit`` entries of the execution log."""

    type: ClassVar[str] = "log"
    id: Union[int, str]
    limit: int = 50
    version: int = PROTOCOL_VERSION


CursorKind = Literal["", "attribute", "column", "parameter", "name"]


@dataclass(frozen=True)
class CursorRequest:
    """The names that can follow at the cursor, from the live namespace (see ``cursor.py``)."""

    type: ClassVar[str] = "cursor"
    id: Union[int, str]
    before: str = ""  # the cell's text before the cursor
    after: str = ""  # and after it
    notebook: list[str] = field(default_factory=list)  # sources of the notebook's code cells
    budget_ms: int = 60  # a fork evaluating the expression is killed at this deadline
    max_names: int = 4000  # more heads than this: none are sent (a cut list would forbid names)
    # time.time() * 1000 after which the request is stale: answered without forking. 0: none.
    deadline_ms: float = 0.0
    version: int = PROTOCOL_VERSION


# ----------------------------------------------------------------------------------------------
# Replies (kernel → server)


@dataclass(frozen=True)
class SpecsReply:
    type: ClassVar[str] = "specs_reply"
    reply_to: Union[int, str]
    specs: list[Spec]
    missing: list[str] = field(default_factory=list)  # asked for, not defined in the kernel
    skipped: list[str] = field(default_factory=list)  # defined, left out: the budget ran out
    execution_count: int = 0
    elapsed_ms: float = 0.0
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ValidateReply:
    type: ClassVar[str] = "validate_reply"
    reply_to: Union[int, str]
    verdicts: list[Verdict]  # one per candidate, in request order
    execution_count: int = 0
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class LogReply:
    type: ClassVar[str] = "log_reply"
    reply_to: Union[int, str]
    entries: list[LogEntry]  # oldest first
    dropped: int = 0  # entries that fell out of the ring buffer since the kernel started
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class CursorReply:
    """What may come first at the cursor; the fields of the backend's ``Constraint`` plus why."""

    type: ClassVar[str] = "cursor_reply"
    reply_to: Union[int, str]
    kind: CursorKind = ""  # "": nothing to hold the cursor to (``note`` says why)
    # The allowed heads, whole: attribute names; column labels as Python literals ("'units'",
    # '"units"', "3"); parameter names followed by "=" (and the names of kind "name": a
    # positional argument may come instead); bound names + builtins + keywords.
    names: list[str] = field(default_factory=list)
    typed: str = ""  # what the user already typed of the head ("gr" in ``sales.gr``, "'un" in ``df['un``)
    required: bool = True  # False: only an identifier the completion begins must be a head
    note: str = ""  # "inside a string", "evaluated in a fork", "not evaluated: the kernel is running a cell"
    execution_count: int = 0
    elapsed_ms: float = 0.0
    version: int = PROTOCOL_VERSION


KernelMessage = Union[
    SpecsRequest, ValidateRequest, LogRequest, CursorRequest, SpecsReply, ValidateReply, LogReply, CursorReply, Error
]

KERNEL_MESSAGES: Mapping[str, type] = {
    cls.type: cls
    for cls in (SpecsRequest, ValidateRequest, LogRequest, CursorRequest, SpecsReply, ValidateReply, LogReply,
                CursorReply, Error)
}


def decode(data: Any, *, limit: int = MAX_KERNEL_MESSAGE_BYTES) -> Any:
    """Parse one comm payload (a JSON-able dict, or its text); raise ``ProtocolError``."""
    if not isinstance(data, (str, bytes)):
        try:
            data = json.dumps(data, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ProtocolError("malformed", f"comm data is not JSON: {exc}") from None
    return _decode(data, limit=limit, messages=KERNEL_MESSAGES)


def to_data(message: Any) -> dict:
    """A message as the JSON-able dict a comm sends."""
    return json.loads(_encode(message))
