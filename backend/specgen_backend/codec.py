"""Checking a JSON object against a frozen dataclass of the protocols: required fields present,
values of the declared types (the small vocabulary the protocols use: str, int, float, bool,
None, Literal, list, Optional/Union, nested dataclasses), unknown fields ignored.

Apart from ``protocol.py`` so that the message definitions stay readable; every failure is a
``ProtocolError("malformed", ...)`` naming the path of the bad value (``generate.context.cells[2]``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

__all__ = ["ProtocolError", "build"]


class ProtocolError(Exception):
    """A frame that cannot be served; carries what the error reply needs."""

    def __init__(self, error_type: str, message: str, *, reply_to: Any = None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.reply_to = reply_to


def build(cls: type, obj: Any, *, path: str) -> Any:
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"{path} must be an object, not {type(obj).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in obj:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError("malformed", f"{path}.{f.name} is required")
            continue
        kwargs[f.name] = _check(hints[f.name], obj[f.name], path=f"{path}.{f.name}")
    return cls(**kwargs)


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
            raise ProtocolError("malformed", f"{path} must be one of {list(typing.get_args(hint))}, not {value!r}")
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
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError("malformed", f"{path} must be an integer")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ProtocolError("malformed", f"{path} must be a {hint.__name__}")
        return value
    raise TypeError(f"protocol.py uses an unsupported type hint at {path}: {hint!r}")
