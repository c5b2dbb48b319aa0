"""The wire protocol between the browser (labextension) and the server extension.

One websocket per browser tab at ``<base_url>/specgen/ws``. Messages share the framing and the
codec of the backend protocol (``specgen_backend.protocol``): a ``type`` tag, the protocol
``version``, a request ``id`` chosen by the browser and ``reply_to`` on every answer; each
request gets exactly one final answer (``done`` or ``error``).

The TypeScript types in ``labextension/src/protocol.ts`` are generated from this module
(``python -m jupyter_specgen.protocol_typescript``) and a test fails when they differ, so the
two ends cannot drift.

Browser → server: ``complete``, ``cancel``, ``model_download`` (only on the user's click: fetch the
offered model and switch to it; answered by the backend's ``download_progress`` frames, relayed, and
one ``model_downloaded`` or ``error``; ``cancel`` stops it).
Server → browser: ``progress`` (the stage a request is in: specs, generating, validating),
``shown`` (a candidate that held up, as soon as it did), ``chunk`` (raw, unvalidated text of one
candidate; only when the request asked for ``stream``), ``done`` (final, every item that held up,
ranked; or none and a ``summary`` of why), ``error`` (final), ``status`` (the backend's state,
pushed on connect and on change),
``personalize`` (the user's personalize job and adapters, pushed to that user's tabs whenever
they change).

Personalization is driven over REST (``routes_personalize.py``); the bodies of those requests
and answers are the dataclasses of the last section (``DataSummary``, ``FeedbackReport``,
``RollbackRequest``, and ``Personalize`` itself as the state).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional, Union

from specgen_backend.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    AdapterInfo,
    Cell,
    DownloadProgress,
    Error,
    ErrorInfo,
    EvalMetrics,
    JobReport,
    JobState,
    ModelDownloaded,
    ModelOffer,
    ProtocolError,
    VersionInfo,
    build,
    decode as _decode,
    encode,
    error_reply,
)

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_MESSAGE_BYTES",
    "Cell",
    "Complete",
    "Cancel",
    "Chunk",
    "Item",
    "ItemVerdict",
    "Progress",
    "Shown",
    "Done",
    "Error",
    "ErrorInfo",
    "Status",
    "ModelOffer",
    "ModelDownload",
    "DownloadProgress",
    "ModelDownloaded",
    "Personalize",
    "AdapterInfo",
    "VersionInfo",
    "EvalMetrics",
    "JobReport",
    "JobState",
    "Skipped",
    "Dropped",
    "DataSummary",
    "UsedExample",
    "Estimate",
    "FeedbackReport",
    "CellRun",
    "RollbackRequest",
    "REST_TYPES",
    "ProtocolError",
    "BROWSER_MESSAGES",
    "parse_body",
    "decode",
    "encode",
    "error_reply",
]


@dataclass(frozen=True)
class Complete:
    """Complete the text at the cursor of cell ``cell_id``.

    ``id`` increases with every request of a tab; a newer ``complete`` for the same cell
    supersedes the older one, whose answer is then dropped (JupyterLab passes providers no abort
    signal, so the number is how both ends tell stale work from live work).
    """

    type: ClassVar[str] = "complete"
    id: int
    path: str
    cell_id: str
    prefix: str
    suffix: str = ""
    cells: list[Cell] = field(default_factory=list)  # the whole notebook, in order
    active: int = -1  # index of the edited cell in ``cells``
    kernel_id: Optional[str] = None
    version: int = PROTOCOL_VERSION
    # Send raw ``chunk``s of the candidates as they are generated, before anything validated them
    # (for people who prefer speed over proof); off: only ``progress``, then ``shown``.
    stream: bool = False


@dataclass(frozen=True)
class Cancel:
    """The user moved on: stop request ``id`` (it ends with a ``cancelled`` error)."""

    type: ClassVar[str] = "cancel"
    id: int
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Chunk:
    """More raw text of candidate ``candidate`` of request ``reply_to`` (a delta, unvalidated);
    sent only when the request set ``stream``."""

    type: ClassVar[str] = "chunk"
    reply_to: int
    candidate: int
    text: str
    version: int = PROTOCOL_VERSION


# What running a candidate in a fork of the kernel showed, for the ones worth showing:
# "ran": the cell ran to the end; "incomplete": the cell is an unfinished statement (``codeop``:
# the user is inside an open block) and the part that ran did not fail; "defined": a function or
# method body was defined but not exercised (no call of it found in the notebook);
# "not_validated": not run (validation off, no sandbox on this system, the kernel busy or absent).
# Candidates that raised, timed out or crashed are never sent.
ItemVerdict = Literal["ran", "incomplete", "defined", "not_validated"]


@dataclass(frozen=True)
class Item:
    """One suggestion, ready to show as ghost text."""

    text: str
    verdict: ItemVerdict = "not_validated"
    detail: str = ""  # why, in words; "not_validated" always says why it was not run
    score: float = 0.0  # model log-likelihood; ranking ties are broken by it
    adapter: str = ""  # the user's adapter that wrote it ("variant-2"); "" for the base model


@dataclass(frozen=True)
class Progress:
    """Where request ``reply_to`` is (not final): asking the kernel for ``specs``, ``generating``
    candidates, ``validating`` them (``done`` of ``total`` have a verdict)."""

    type: ClassVar[str] = "progress"
    reply_to: int
    stage: Literal["specs", "generating", "validating"]
    done: int = 0
    total: int = 0
    message: str = ""
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Shown:
    """A candidate of request ``reply_to`` that held up, sent as soon as it did (not final: the
    ranked order of all of them comes with ``done``)."""

    type: ClassVar[str] = "shown"
    reply_to: int
    item: Item
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Done:
    """The final answer to ``complete``: every item that held up, best first."""

    type: ClassVar[str] = "done"
    reply_to: int
    items: list[Item]
    model: str = ""
    version: int = PROTOCOL_VERSION
    # When ``items`` is empty: why, in words ("no suggestion: 3 candidates raised NameError:
    # name 's' is not defined"); else "".
    summary: str = ""
    rejected: int = 0  # candidates not shown (raised, timed out, crashed, empty, only a comment)


@dataclass(frozen=True)
class Status:
    """The backend's state as the status bar shows it."""

    type: ClassVar[str] = "status"
    reply_to: Union[int, None]
    state: Literal["starting", "ready", "error"]
    model: str = ""
    device: str = ""
    message: str = ""  # for ``error``: the reason and how to fix it
    version: int = PROTOCOL_VERSION
    reason: str = ""  # why this model is the one in use
    offer: Optional[ModelOffer] = None  # a better model one click away (while the embedded one serves)


@dataclass(frozen=True)
class ModelDownload:
    """The user clicked the offer: download ``model`` ("" : the one offered) and switch to it."""

    type: ClassVar[str] = "model_download"
    id: int
    model: str = ""
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Personalize:
    """The user's personalize job (running or last) and published adapters; ``enabled``: whether
    completions use them. Pushed on every change and answered by ``GET /specgen/personalize``."""

    type: ClassVar[str] = "personalize"
    reply_to: Union[int, None]
    job: Optional[JobState]
    adapters: list[AdapterInfo] = field(default_factory=list)
    enabled: bool = True
    version: int = PROTOCOL_VERSION


BROWSER_MESSAGES: Mapping[str, type] = {
    cls.type: cls for cls in (Complete, Cancel, Progress, Shown, Chunk, Done, Error, Status, Personalize, ModelDownload,
                              DownloadProgress, ModelDownloaded)
}


# ----------------------------------------------------------------------------------------------
# REST bodies (``/specgen/personalize...`` and ``/specgen/feedback``)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Dropped:
    reason: str  # "raised", "never ran", "size"
    count: int


@dataclass(frozen=True)
class UsedExample:
    """One training or held-out example and why it is used."""

    notebook: str
    cell_index: int  # its cell in the notebook; -1 for a kept suggestion
    split: Literal["train", "heldout"]
    reason: str  # "a cell you wrote that ran cleanly", "a suggestion you kept (…)"
    preview: str  # the start of what the model learns to write


@dataclass(frozen=True)
class Estimate:
    """How long a personalize job would take, before it starts (``personalize/estimate.py``)."""

    seconds: float
    text: str  # "about 2 minutes"
    steps: int  # optimizer steps planned: the main adapter and any variants
    seconds_per_step: float
    measured: bool  # the time of a step was measured on this server's last job (else a first guess)
    how: str  # how it was computed, in words


@dataclass(frozen=True)
class DataSummary:
    """What a personalize job would train on (``GET /specgen/personalize/data``)."""

    root: str  # the folder scanned (the Jupyter root)
    train: int  # training examples
    heldout: int  # held-out examples (evaluation)
    notebooks_train: list[str]
    notebooks_heldout: list[str]
    from_feedback: int = 0  # examples from accepted suggestions
    with_specs: int = 0  # examples whose I/O spec came from a kernel's execution log
    feedback_accepted: int = 0
    feedback_rejected: int = 0
    skipped: list[Skipped] = field(default_factory=list)  # notebooks not read, and why
    dropped: list[Dropped] = field(default_factory=list)  # cells not used, and why
    truncated: bool = False  # more notebooks than the scan reads
    left_out: int = 0  # examples beyond what one job uploads (oldest notebooks first)
    # What became of the accepted suggestions (``personalize/feedback.py`` has the rule): only kept
    # ones are trained on.
    feedback_kept: int = 0  # still in their cell when it next ran cleanly
    feedback_changed: int = 0  # deleted or rewritten before the cell next ran
    feedback_raised: int = 0  # the cell raised the next time it ran
    feedback_pending: int = 0  # the cell has not run since
    feedback_unchecked: int = 0  # accepted before this rule existed: never checked, never trained on
    examples: list[UsedExample] = field(default_factory=list)  # why each example is used (the first 300)
    refusal: str = ""  # why "Start training" is refused, and what to do; "" when it can start
    estimate: Optional[Estimate] = None  # how long a job would take (None when it is refused)


@dataclass(frozen=True)
class FeedbackReport:
    """A suggestion the user accepted or dismissed (``POST /specgen/feedback``)."""

    path: str  # the notebook
    prefix: str  # the active cell's text before the cursor when it was shown
    suggestion: str
    accepted: bool
    # Only part of it was taken (accept next word / accept line): ``suggestion`` is that part and
    # ``prefix`` the cell's text before it; the rest stayed on screen and is reported on its own.
    partial: bool = False
    cells: list[Cell] = field(default_factory=list)  # the notebook, in order
    active: int = -1  # index of the active cell in ``cells``
    cell_id: str = ""  # the cell it was shown in
    key: str = ""  # the browser's name for one accept: its ``ran`` report carries the same key
    ran: Optional[CellRun] = None  # an accepted suggestion's cell, the next time it ran


@dataclass(frozen=True)
class CellRun:
    """The cell of an accepted suggestion when it next ran: its text then, and whether it raised."""

    source: str
    success: bool


@dataclass(frozen=True)
class RollbackRequest:
    """``POST /specgen/personalize/rollback``: put an earlier version back in service."""

    adapter: str = "personal"
    to: Optional[str] = None  # default: the version before the current one


REST_TYPES = (DataSummary, FeedbackReport, RollbackRequest)


def parse_body(cls: type, raw: Union[str, bytes], *, limit: int = MAX_MESSAGE_BYTES):
    """Parse a REST body into ``cls``; raise ``ProtocolError`` saying what is wrong."""
    import json

    if len(raw) > limit:
        raise ProtocolError("too_large", f"body of {len(raw)} bytes exceeds the limit of {limit} bytes")
    try:
        obj = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("malformed", f"body is not valid JSON: {exc}") from None
    return build(cls, obj, path=cls.__name__)


def decode(raw: Union[str, bytes], *, limit: int = MAX_MESSAGE_BYTES):
    """Parse one frame of the browser protocol; raise ``ProtocolError`` saying what is wrong."""
    return _decode(raw, limit=limit, messages=BROWSER_MESSAGES)
