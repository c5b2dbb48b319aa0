"""The wire protocol between the Jupyter server extension and the model backend.

Defined once, here, and imported by both ends (``jupyter_specgen`` may import this module and
nothing else of the backend). Every frame is one JSON object with a ``type`` tag and the protocol
``version``. Every request carries an ``id`` chosen by the client; every answer names it in
``reply_to``. Each request gets exactly one final answer: a ``result`` or an ``error``; ``token``
frames may come before it, and for ``generate`` one ``candidate_end`` per candidate as soon as that
candidate is complete (the client can start validating it while the others are decoded).

Client → backend: ``generate``, ``cancel``, ``status``, ``adapters_list``, ``adapter_load``,
``adapter_delete``; personalization: ``personalize_start``, ``personalize_status``,
``personalize_cancel``, ``personalize_judged``, ``adapter_versions``, ``adapter_rollback``;
``model_download`` (fetch a model of the list into the hub cache and switch to it; ``cancel`` stops it).
Backend → client: ``token`` (streamed text), ``candidate_end`` (one candidate complete, not
final), ``result`` (final), ``error`` (final), ``status``
(answer to ``status``, and pushed unprompted whenever the model state changes, with
``reply_to = None``), ``adapters`` (final answer to the three adapter requests), ``job`` (final
answer to the personalize requests, and pushed with ``reply_to = None`` to the connection that
started a job at each step of it), ``versions`` (final answer to the two version requests),
``download_progress`` (not final: bytes, rate, time left of a ``model_download``) and
``model_downloaded`` (its final answer; the new model's ``status`` is pushed when it serves).

A personalize job runs on the backend host: it trains the user's adapter on the examples the
request carries, evaluates it against the adapter in service on the held-out examples, and
publishes it only if it is not worse. When the request asks for it (``judge``), the job stops
once in phase ``judge`` with the held-out predictions of both adapters; the client runs them
where the notebooks' data lives and answers ``personalize_judged`` with the executable rates,
which then count in the publish rule (no answer within the backend's wait: they do not count,
and the report says so).

Adapters belong to users: a request's ``user`` (the Jupyter user the server extension
authenticated) sees, uses, loads and deletes only adapter ids of its own, plus the operator's
shared adapters, named ``shared/<name>``.

Decoding is strict about what it needs (required fields and their types) and lenient about what
it does not (unknown fields are ignored, so an older peer can talk to a newer one within a
version).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional, Union

from .codec import ProtocolError, build, loads, valid_id

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_MESSAGE_BYTES",
    "ErrorType",
    "ProtocolError",
    "Cell",
    "CompletionContext",
    "Constraint",
    "Generate",
    "Cancel",
    "StatusRequest",
    "Token",
    "Candidate",
    "CandidateEnd",
    "Result",
    "ErrorInfo",
    "Error",
    "Status",
    "AdaptersList",
    "AdapterLoad",
    "AdapterDelete",
    "Adapters",
    "Example",
    "PersonalizeStart",
    "PersonalizeStatus",
    "PersonalizeCancel",
    "PersonalizeJudged",
    "AdapterVersions",
    "AdapterRollback",
    "EvalMetrics",
    "JobReport",
    "JobState",
    "Job",
    "VersionInfo",
    "AdapterInfo",
    "Versions",
    "ModelOffer",
    "ModelDownload",
    "DownloadProgress",
    "ModelDownloaded",
    "Message",
    "MESSAGES",
    "decode",
    "encode",
    "error_reply",
]

PROTOCOL_VERSION = 1

# Frames larger than this are answered with a ``too_large`` error and otherwise ignored. The
# websocket layer itself accepts somewhat more (see server.py) so that an oversized frame reaches
# this check instead of tearing the connection down.
MAX_MESSAGE_BYTES = 1 << 20

ErrorType = Literal[
    "malformed",  # not JSON, not an object, or a field of the wrong type
    "unknown_type",  # a `type` this version does not know
    "version",  # a protocol version this peer does not speak
    "too_large",  # frame above MAX_MESSAGE_BYTES
    "unauthorized",  # missing or wrong token
    "model_unavailable",  # the model could not be loaded; the message says how to fix it
    "unknown_adapter",  # an adapter id that is not loaded or not the user's
    "overloaded",  # the queue is full; try again
    "cancelled",  # the client cancelled the request
    "backend_unavailable",  # (server extension) the backend died or cannot be reached
    "internal",  # a bug; the backend log has the traceback
    "job_running",  # a personalize job of this user is already running (here or in another process)
    "bad_request",  # a well-formed request that cannot be done (no data, nothing to roll back to ...)
    "offline",  # a download without network: the message says how to copy a model in by hand
]


# ----------------------------------------------------------------------------------------------
# Payload pieces


@dataclass(frozen=True)
class Cell:
    """One notebook cell, as the prompt builder sees it."""

    cell_type: Literal["code", "markdown", "raw"]
    source: str


@dataclass(frozen=True)
class CompletionContext:
    """Where the cursor is: the notebook around it, and the text of the active cell split at it.

    ``cells`` is the whole notebook in order; ``active`` indexes the cell being edited (its own
    ``source`` in ``cells`` is ignored in favour of ``prefix`` + ``suffix``). ``preamble`` is
    extra comment text the server extension puts before the active cell (the kernel's variable
    specs, for instance); it is rendered verbatim.
    """

    prefix: str
    suffix: str = ""
    cells: list[Cell] = field(default_factory=list)
    active: int = -1
    preamble: str = ""


@dataclass(frozen=True)
class Constraint:
    """What may come first at the cursor, taken from the live kernel (the identifier being generated).

    A head is complete when the text generated so far equals the rest of a head (after ``typed``)
    and either the head ends in a non-identifier character or the next character generated is not
    an identifier character (``[A-Za-z0-9_]``). After the head, decoding is free. Applied per row,
    to each row's logits, in the same batch as rows with other constraints or none.
    """

    kind: Literal["attribute", "column", "parameter", "name"]
    # The allowed heads, whole: attribute names; column labels as Python literals ("'units'", '"units"', "3");
    # parameter names followed by "=" ("axis="); names bound in the namespace + builtins + keywords.
    names: list[str] = field(default_factory=list)
    # What the user already typed of the head just before the cursor ("gr" in `sales.gr`, "'un" in `df['un`):
    # the completion must continue it to one of ``names``; heads that do not start with it are out.
    typed: str = ""
    # True: the completion must begin with (the rest of) a head. False: only when the model begins an
    # identifier must that identifier be one of the heads (start of an expression, call arguments).
    required: bool = True
    # Heads (of ``names``) the notebook's own words name (``mean_temp = weather[`` names ``'temp_c'``):
    # a request's first row is steered to one of them (where the head is optional, it begins one)
    # and its other rows spread over the rest, so the candidate the user most likely wants is among
    # those validated however the model ranks it. Empty: no steering.
    preferred: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Requests (client → backend)


@dataclass(frozen=True)
class Generate:
    """Sample ``n`` candidates for ``context``; stream them as ``token`` frames, then ``result``."""

    type: ClassVar[str] = "generate"
    id: Union[int, str]
    user: str
    context: CompletionContext
    n: int = 1
    max_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    # One adapter id per candidate row (cycled if shorter than n); [] means the base model.
    adapters: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)  # extra stop strings beyond the cell's end
    version: int = PROTOCOL_VERSION
    # Answer within this many milliseconds of arrival: a request still queued then gets an
    # ``overloaded`` error; one being decoded ends with what it has (finish_reason ``length``).
    deadline_ms: Optional[int] = None
    # Sample with the user's own published adapters: across their variants when they have some
    # (row i uses variant i mod K), else their main adapter, else the base model. Ignored when
    # ``adapters`` names adapters explicitly.
    personal: bool = False
    # Hold the identifier at the cursor to the names the live kernel has (None: decode freely).
    constraint: Optional[Constraint] = None


@dataclass(frozen=True)
class Cancel:
    """Stop the generation of request ``id``; it then ends with a ``cancelled`` error."""

    type: ClassVar[str] = "cancel"
    id: Union[int, str]
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class StatusRequest:
    """Ask for the backend's state; answered by a ``status`` frame."""

    type: ClassVar[str] = "status_request"
    id: Union[int, str]
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class AdaptersList:
    """Ask which adapters ``user`` may use; answered by ``adapters``."""

    type: ClassVar[str] = "adapters_list"
    id: Union[int, str]
    user: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class AdapterLoad:
    """Load (or reload) the PEFT folder ``path`` as ``user``'s adapter ``name``.

    ``path`` is relative to the user's folder under the backend's adapter root
    (``<adapter-root>/<user>/<path>``); paths leaving that folder are refused.
    """

    type: ClassVar[str] = "adapter_load"
    id: Union[int, str]
    user: str
    name: str
    path: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class AdapterDelete:
    """Unload ``user``'s adapter ``name`` from the backend (the folder on disk is left alone)."""

    type: ClassVar[str] = "adapter_delete"
    id: Union[int, str]
    user: str
    name: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Example:
    """One training example: the notebook before a cell, what it was for, and the cell's code."""

    notebook: str  # path relative to the Jupyter root; the unit of the held-out split
    target: str  # the code the model should write
    cells_before: list[Cell] = field(default_factory=list)
    intent: str = ""  # the markdown or comment that precedes the cell
    spec: str = ""  # comment block describing what the cell read, from execution
    prefix: str = ""  # the start of the cell kept in the prompt (its leading comments)
    origin: Literal["notebook", "feedback"] = "notebook"
    cell_index: int = -1  # position of the cell in its notebook (-1: not from a notebook file)


@dataclass(frozen=True)
class PersonalizeStart:
    """Train ``user``'s adapter on ``train``, judge it on ``heldout``, publish it if not worse."""

    type: ClassVar[str] = "personalize_start"
    id: Union[int, str]
    user: str
    train: list[Example]
    heldout: list[Example] = field(default_factory=list)
    variants: int = 0  # K influence-partitioned variant adapters to train after the main one
    steps: int = 0  # optimizer steps of the main adapter; 0: the backend's default
    judge: bool = False  # the client answers the ``judge`` phase with executable rates
    # The adapter trained: PEFT LoRA (additive) or fLoRA (multiplicative; takes no variants).
    kind: Literal["lora", "flora"] = "lora"
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class PersonalizeStatus:
    """Ask for ``user``'s running or last job; answered by ``job`` (``job: null`` if none)."""

    type: ClassVar[str] = "personalize_status"
    id: Union[int, str]
    user: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class PersonalizeCancel:
    """Stop ``user``'s running job; nothing of it is published. Answered by ``job``."""

    type: ClassVar[str] = "personalize_cancel"
    id: Union[int, str]
    user: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class PersonalizeJudged:
    """The executable rates of the predictions of a job in phase ``judge`` (``null``: unknown)."""

    type: ClassVar[str] = "personalize_judged"
    id: Union[int, str]
    user: str
    before: Optional[float] = None
    after: Optional[float] = None
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class AdapterVersions:
    """Ask for ``user``'s published adapters and their versions; answered by ``versions``."""

    type: ClassVar[str] = "adapter_versions"
    id: Union[int, str]
    user: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class AdapterRollback:
    """Put version ``to`` (default: the one before the current) of ``adapter`` back in service."""

    type: ClassVar[str] = "adapter_rollback"
    id: Union[int, str]
    user: str
    adapter: str = "personal"
    to: Optional[str] = None
    version: int = PROTOCOL_VERSION


# ----------------------------------------------------------------------------------------------
# Answers (backend → client)


@dataclass(frozen=True)
class Token:
    """New text of one candidate (a delta: append it to what came before for that candidate)."""

    type: ClassVar[str] = "token"
    reply_to: Union[int, str]
    candidate: int
    text: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Candidate:
    """One finished candidate: the text to insert at the cursor."""

    text: str
    logprob: float  # sum of token log-probabilities under the sampling model
    finish_reason: Literal["stop", "length", "cancelled"]
    adapter: Optional[str] = None


@dataclass(frozen=True)
class CandidateEnd:
    """Candidate ``index`` of request ``reply_to`` is complete (sent as soon as its row ends, before ``result``).

    ``candidate`` is exactly the one ``result`` will carry at ``index``. A cancelled request sends
    none for the rows it had not finished.
    """

    type: ClassVar[str] = "candidate_end"
    reply_to: Union[int, str]
    index: int
    candidate: Candidate
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Result:
    """The final answer to ``generate``."""

    type: ClassVar[str] = "result"
    reply_to: Union[int, str]
    candidates: list[Candidate]
    model: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ErrorInfo:
    type: ErrorType
    message: str


@dataclass(frozen=True)
class Error:
    """The final answer to any request that could not be served."""

    type: ClassVar[str] = "error"
    reply_to: Union[int, str, None]
    error: ErrorInfo
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ModelOffer:
    model: str  # hub id, e.g. "Qwen/Qwen2.5-Coder-0.5B"
    bytes: int  # what the download transfers


@dataclass(frozen=True)
class Status:
    """The backend's state. ``state`` is ``loading`` until the model is ready or failed."""

    type: ClassVar[str] = "status"
    reply_to: Union[int, str, None]
    state: Literal["loading", "ready", "error"]
    model: str
    device: str = ""
    message: str = ""  # for ``error``: what went wrong and how to fix it
    version: int = PROTOCOL_VERSION
    reason: str = ""  # why this model is the one in use ("Qwen2.5-Coder-0.5B found in the Hugging Face cache; ...")
    # A better model worth downloading (``model_download``), offered while the embedded model is in use.
    offer: Optional[ModelOffer] = None


@dataclass(frozen=True)
class Adapters:
    """The adapters a user may use: their own (ids as they name them) and the shared ones."""

    type: ClassVar[str] = "adapters"
    reply_to: Union[int, str]
    adapters: list[str]
    shared: list[str]
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class EvalMetrics:
    """How an adapter did on the held-out examples."""

    exact_match: float
    edit_similarity: float
    count: int
    executable_rate: Optional[float] = None  # share that ran after the notebook's cells; None: not run


@dataclass(frozen=True)
class JobReport:
    """What a finished job did."""

    published: bool
    version: Optional[str] = None  # the version published ("v3")
    reason: str = ""  # why it was or was not published
    before_label: str = ""  # what it was compared with: "base" or the version in service
    before: Optional[EvalMetrics] = None
    after: Optional[EvalMetrics] = None
    train_examples: int = 0
    heldout_examples: int = 0
    variants_version: Optional[str] = None
    variant_groups: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class JobState:
    """A personalize job: where it is, and at the end what it did."""

    user: str
    state: Literal["running", "done", "failed", "cancelled"]
    # "starting", "train", "evaluate", "judge", "influence", "variants", "publish", "finished"
    phase: str
    step: int = 0
    total: int = 0
    loss: float = 0.0
    error: str = ""  # for "failed": what went wrong
    report: Optional[JobReport] = None
    started: float = 0.0  # time.time()
    # Only in phase "judge": the held-out predictions to run (before: the adapter in service).
    predictions_before: list[str] = field(default_factory=list)
    predictions_after: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """The answer to a personalize request, and each step of a running job (``reply_to = None``)."""

    type: ClassVar[str] = "job"
    reply_to: Union[int, str, None]
    job: Optional[JobState]
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class VersionInfo:
    version: str  # "v2"
    created: float = 0.0
    metrics: Optional[EvalMetrics] = None  # its held-out numbers when it was published
    train_examples: int = 0


@dataclass(frozen=True)
class AdapterInfo:
    name: str  # "personal", "variants"
    current: Optional[str]  # the version in service
    versions: list[VersionInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Versions:
    """``user``'s published adapters (only theirs)."""

    type: ClassVar[str] = "versions"
    reply_to: Union[int, str]
    adapters: list[AdapterInfo]
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ModelDownload:
    """Download ``model`` (a hub id of the backend's list) into the Hugging Face cache, then serve it.

    Only ever sent on the user's request. Answered by ``download_progress`` frames, then one
    ``model_downloaded`` or ``error`` (``offline`` without network; ``cancelled`` after ``cancel``, the
    part downloaded is kept and the next ``model_download`` goes on from there).
    """

    type: ClassVar[str] = "model_download"
    id: Union[int, str]
    model: str
    switch: bool = True  # serve the model once it is here (without a restart)
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class DownloadProgress:
    """Where ``model_download`` ``reply_to`` is (not final)."""

    type: ClassVar[str] = "download_progress"
    reply_to: Union[int, str]
    model: str
    done_bytes: int  # of the model on disk, including what an earlier download left
    total_bytes: int
    transferred_bytes: int = 0  # by this download
    rate: float = 0.0  # bytes per second
    eta_s: Optional[float] = None  # seconds left (null: unknown)
    phase: Literal["download", "load"] = "download"  # "load": here and verified, being loaded to serve
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ModelDownloaded:
    """The final answer to ``model_download``: the model is in the cache (and served, if ``switched``)."""

    type: ClassVar[str] = "model_downloaded"
    reply_to: Union[int, str]
    model: str
    path: str  # the snapshot folder in the hub cache
    total_bytes: int
    transferred_bytes: int
    verified: str  # what was checked, in words
    switched: bool = False
    version: int = PROTOCOL_VERSION


Message = Union[
    Generate, Cancel, StatusRequest, AdaptersList, AdapterLoad, AdapterDelete, PersonalizeStart, PersonalizeStatus,
    PersonalizeCancel, PersonalizeJudged, AdapterVersions, AdapterRollback, Token, CandidateEnd, Result, Error, Status,
    Adapters, Job, Versions, ModelDownload, DownloadProgress, ModelDownloaded,
]

MESSAGES: Mapping[str, type] = {
    cls.type: cls
    for cls in (
        Generate, Cancel, StatusRequest, AdaptersList, AdapterLoad, AdapterDelete, PersonalizeStart, PersonalizeStatus,
        PersonalizeCancel, PersonalizeJudged, AdapterVersions, AdapterRollback, Token, CandidateEnd, Result, Error,
        Status, Adapters, Job, Versions, ModelDownload, DownloadProgress, ModelDownloaded,
    )
}


# ----------------------------------------------------------------------------------------------
# Encoding and decoding


def encode(message: Message) -> str:
    """Serialise a message to one JSON text frame."""
    body = dataclasses.asdict(message)
    return json.dumps({"type": message.type, **body}, separators=(",", ":"))


def decode(
    raw: Union[str, bytes],
    *,
    limit: int = MAX_MESSAGE_BYTES,
    messages: Optional[Mapping[str, type]] = None,
) -> Any:
    """Parse and validate one frame; raise ``ProtocolError`` saying what is wrong with it.

    ``messages`` maps ``type`` tags to message classes; by default the ones of this protocol
    (the browser protocol of ``jupyter_specgen`` passes its own).
    """
    messages = MESSAGES if messages is None else messages
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > limit:
        raise ProtocolError("too_large", f"message of {size} bytes exceeds the limit of {limit} bytes")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("malformed", f"frame is not valid UTF-8: {exc}") from None
    try:
        obj = loads(raw)  # no NaN/Infinity, no float overflowing to inf
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("malformed", f"frame is not valid JSON: {str(exc)[:300]}", reply_to=_lenient_id(raw)) from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"frame must be a JSON object, not {type(obj).__name__}")
    reply_to = obj.get("id") if valid_id(obj.get("id")) else None
    version = obj.get("version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "version",
            f"protocol version {version!r} is not supported; this peer speaks version {PROTOCOL_VERSION}",
            reply_to=reply_to,
        )
    kind = obj.get("type")
    cls = messages.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {kind!r}; expected one of {sorted(messages)}",
            reply_to=reply_to,
        )
    try:
        return build(cls, obj, path=kind)
    except ProtocolError as exc:
        exc.reply_to = reply_to
        raise


def _lenient_id(raw: str) -> Any:
    """The id of a frame that only Python's lenient JSON reads (``NaN``, ``1e400``), so that the
    error still finishes the request it belongs to; ``None`` if there is none."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    ident = obj.get("id") if isinstance(obj, dict) else None
    return ident if valid_id(ident) else None


def error_reply(reply_to: Any, error_type: ErrorType, message: str) -> Error:
    return Error(reply_to=reply_to, error=ErrorInfo(type=error_type, message=message))
