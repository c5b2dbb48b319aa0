"""Checking a JSON object against a frozen dataclass of the protocols: required fields present,
values of the declared types (the small vocabulary the protocols use: str, int, float, bool,
None, Literal, list, Optional/Union, nested dataclasses), unknown fields ignored.

Apart from ``protocol.py`` so that the message definitions stay readable; every failure is a
``ProtocolError("malformed", ...)`` naming the path of the bad value (``generate.context.cells[2]``).

Values are held to what the receiving code can use, here, once for every protocol (backend,
browser, kernel comm), so that no bad number reaches a sampler or a timer:

- JSON itself: ``NaN``/``Infinity`` tokens and float literals that overflow (``1e400``) are refused;
- every number is finite and within the range of its field (``RANGES``, by ``Class.field``; any
  other integer within ±2**53, what a browser can hold exactly; any other float finite), and an
  integer too large for a float given where a float is expected is refused, never ``OverflowError``;
- every string is valid Unicode (no lone surrogates: they cannot be written out as UTF-8);
- request ids are integers within ±2**53 or strings of at most ``MAX_ID_CHARS`` characters.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from typing import Any, Literal, Union

__all__ = ["ProtocolError", "build", "loads", "valid_id", "RANGES", "MAX_ID_CHARS"]

MAX_ID_CHARS = 200  # ids are echoed in answers and logs: no 500 KB ids
_SAFE_INT = 2**53  # larger integers lose precision in JavaScript (the browser end)

# (lowest, highest) of numeric fields, by "Class.field" (the dataclass name). A bound of None is open.
RANGES: dict[str, tuple[float | None, float | None]] = {
    # backend protocol
    "Generate.n": (1, 1024),  # the engine caps it further (EngineConfig.max_candidates)
    "Generate.max_tokens": (1, 1 << 16),  # capped further by EngineConfig.max_new_tokens
    "Generate.temperature": (0.0, 5.0),
    "Generate.deadline_ms": (0, 3_600_000),  # relative to arrival: at most an hour
    "CompletionContext.active": (-1, 1 << 31),
    "PersonalizeStart.variants": (0, 8),
    "PersonalizeStart.steps": (0, 1_000_000),
    "PersonalizeJudged.before": (0.0, 1.0),
    "PersonalizeJudged.after": (0.0, 1.0),
    "Example.cell_index": (-1, 1 << 31),
    "Token.candidate": (0, 1 << 16),
    "CandidateEnd.index": (0, 1 << 16),
    "EvalMetrics.exact_match": (0.0, 1.0),
    "EvalMetrics.edit_similarity": (0.0, 1.0),
    "EvalMetrics.executable_rate": (0.0, 1.0),
    "EvalMetrics.count": (0, _SAFE_INT),
    # browser protocol
    "Complete.active": (-1, 1 << 31),
    "Chunk.candidate": (0, 1 << 16),
    "FeedbackReport.active": (-1, 1 << 31),
    # kernel comm protocol
    "SpecsRequest.budget_ms": (0, 60_000),
    "SpecsRequest.max_rows": (0, 1000),
    "ValidateRequest.timeout_ms": (1, 600_000),
    "ValidateRequest.memory_mb": (1, 1 << 20),
    "ValidateRequest.deadline_ms": (0, 1e15),  # absolute (epoch milliseconds)
    "LogRequest.limit": (0, 100_000),
    "Verdict.index": (0, 1 << 16),
}


class ProtocolError(Exception):
    """A frame that cannot be served; carries what the error reply needs."""

    def __init__(self, error_type: str, message: str, *, reply_to: Any = None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.reply_to = reply_to


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} does not fit a double")
    return value


def loads(raw: Union[str, bytes]) -> Any:
    """``json.loads`` without the non-standard ``NaN``/``Infinity`` and without overflowing floats.

    Raises ``ValueError`` (or ``RecursionError`` for absurd nesting), as ``json.loads`` does.
    """
    return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)


def valid_id(value: Any) -> bool:
    """Whether ``value`` may be a request id (and so be echoed in ``reply_to`` and logged)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_SAFE_INT <= value <= _SAFE_INT
    return isinstance(value, str) and len(value) <= MAX_ID_CHARS and _valid_text(value)


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        return False
    return True


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    # Resolving the string annotations costs more than checking a whole message; the message
    # classes never change, so once per class.
    return typing.get_type_hints(cls)


def build(cls: type, obj: Any, *, path: str) -> Any:
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"{path} must be an object, not {type(obj).__name__}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in obj:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError("malformed", f"{path}.{f.name} is required")
            continue
        where = f"{path}.{f.name}"
        value = _check(hints[f.name], obj[f.name], path=where)
        _check_range(f"{cls.__name__}.{f.name}", f.name, value, path=where)
        kwargs[f.name] = value
    return cls(**kwargs)


def _check_range(key: str, name: str, value: Any, *, path: str) -> None:
    if name in ("id", "reply_to") and value is not None and not valid_id(value):
        raise ProtocolError("malformed", f"{path} must be an integer within ±2**53 or a string of at most "
                            f"{MAX_ID_CHARS} characters")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = RANGES.get(key, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ProtocolError("malformed", f"{path} must be between {lo} and {hi}, not {_short(value)}")
    if key.endswith(".temperature") and 0 < value < 1e-3:
        # A denormal temperature turns logits into infinities; 0 is how greedy is asked for.
        raise ProtocolError("malformed", f"{path} must be 0 (greedy) or at least 0.001, not {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
    return text[:60]


def _check(hint: Any, value: Any, *, path: str) -> Any:
    """Validate ``value`` against a type hint of the small vocabulary this module uses."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        for option in typing.get_args(hint):
            try:
                return _check(option, value, path=path)
            except ProtocolError:
                pass
        raise ProtocolError("malformed", f"{path} has the wrong type ({type(value).__name__})")
    if origin is Literal:
        if value not in typing.get_args(hint):
            shown = repr(value)[:80] if isinstance(value, str) and _valid_text(value) else type(value).__name__
            raise ProtocolError("malformed", f"{path} must be one of {list(typing.get_args(hint))}, not {shown}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError("malformed", f"{path} must be a list")
        (item,) = typing.get_args(hint)
        return [_check(item, v, path=f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is type(None):
        if value is not None:
            raise ProtocolError("malformed", f"{path} must be null")
        return None
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path=path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError("malformed", f"{path} must be a number")
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ProtocolError("malformed", f"{path} must be a finite number, not {_short(value)}") from None
        if not math.isfinite(number):
            raise ProtocolError("malformed", f"{path} must be a finite number, not {_short(value)}")
        return number
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError("malformed", f"{path} must be an integer")
        if not -_SAFE_INT <= value <= _SAFE_INT:
            raise ProtocolError("malformed", f"{path} must be an integer within ±2**53, not {_short(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ProtocolError("malformed", f"{path} must be a str")
        if not _valid_text(value):
            raise ProtocolError("malformed", f"{path} contains a lone surrogate (not valid Unicode)")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ProtocolError("malformed", f"{path} must be a bool")
        return value
    raise TypeError(f"protocol.py uses an unsupported type hint at {path}: {hint!r}")
