"""Bounded descriptions of the kernel's values: what execution knows and the prompt does not.

``describe`` turns one value into a ``Spec`` (type; shape, columns and dtypes and a few rows of
a dataframe; shape and dtype of an array; length and element types of a container; signature of
a callable; name of a module). It never materialises a big object (it slices before it
renders), never calls a ``__repr__`` it does not trust in the kernel itself (a user-defined one
may raise or hang: it runs in a fork with a deadline, or not at all), and keeps to a time
budget: what does not fit is cut and the spec says so.

pandas, numpy and torch are recognised through ``sys.modules``: never imported here.
"""

from __future__ import annotations

import builtins
import inspect
import itertools
import logging
import os
import re
import sys
import time
import types
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from .messages import Column, Spec

__all__ = ["Budget", "Limits", "describe", "describe_names", "safe_repr", "type_name"]

log = logging.getLogger(__name__)

# Modules whose reprs are known to be bounded and side-effect free.
_TRUSTED_MODULES = frozenset(
    {"builtins", "datetime", "decimal", "fractions", "pathlib", "uuid", "collections", "re",
     "enum", "numpy", "pandas", "torch", "ipaddress", "zoneinfo"}
)
_CONTAINERS = (list, tuple, set, frozenset, dict)
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_BRACKETS = {list: ("[", "]"), tuple: ("(", ")"), set: ("{", "}"), frozenset: ("frozenset({", "})")}


@dataclass(frozen=True)
class Limits:
    """How much of a value a spec shows."""

    max_rows: int = 3  # example rows of a frame, elements of a container
    max_columns: int = 40  # columns listed for a frame
    repr_chars: int = 300  # length of any one rendered example
    sample: int = 20  # elements looked at to infer a container's element types
    repr_timeout_s: float = 0.1  # for a user-defined __repr__ run in a fork


class Budget:
    """A deadline in milliseconds from now, on ``clock`` (wall time unless told otherwise)."""

    def __init__(self, ms: float, clock=time.perf_counter):
        self.clock = clock
        self.deadline = clock() + ms / 1000.0

    def left_s(self) -> float:
        return self.deadline - self.clock()

    def expired(self) -> bool:
        return self.left_s() <= 0


def describe_names(
    namespace: Mapping[str, object],
    names: Iterable[str],
    *,
    budget_ms: float,
    limits: Limits = Limits(),
    hidden: Container[str] = (),
    fork_repr: bool = True,
) -> tuple[list[Spec], list[str], list[str]]:
    """Describe ``names`` of ``namespace`` in order until the budget runs out.

    Returns (specs, missing: not defined and not builtins, skipped: defined, not described for
    lack of time). Hidden names (IPython's ``In``, ``_i3``…) are neither described nor missing.
    """
    budget = Budget(budget_ms)
    specs: list[Spec] = []
    missing: list[str] = []
    skipped: list[str] = []
    for name in dict.fromkeys(names):
        if name in hidden:
            continue
        if name not in namespace:
            if not hasattr(builtins, name):
                missing.append(name)
            continue
        if budget.expired():
            skipped.append(name)
            continue
        specs.append(describe(namespace[name], name, limits=limits, budget=budget, fork_repr=fork_repr))
    return specs, missing, skipped


def describe(
    obj: object,
    name: str = "<value>",
    *,
    limits: Limits = Limits(),
    budget: Budget | None = None,
    fork_repr: bool = False,
) -> Spec:
    """A bounded ``Spec`` of ``obj``; never raises."""
    budget = budget or Budget(50)
    try:
        return _describe(obj, name, limits, budget, fork_repr)
    except Exception as exc:  # noqa: BLE001 - user objects can fail in any way
        log.debug("describing %s failed", name, exc_info=True)
        return Spec(name=name, type=_type_name_safe(obj), truncated=True, note=f"description failed: {_exc_text(exc)}")


def _describe(obj: object, name: str, limits: Limits, budget: Budget, fork_repr: bool) -> Spec:
    tname = type_name(type(obj))
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    if pd is not None and isinstance(obj, pd.DataFrame):
        return _describe_frame(obj, name, tname, limits, budget)
    if pd is not None and isinstance(obj, pd.Series):
        return _describe_series(obj, name, tname, limits, budget)
    if np is not None and isinstance(obj, np.ndarray):
        return _describe_array(obj, name, tname, limits, budget, str(obj.dtype))
    if torch is not None and isinstance(obj, torch.Tensor):
        dtype = str(obj.dtype).removeprefix("torch.")
        spec = _describe_array(obj, name, tname, limits, budget, dtype, kind="tensor")
        if obj.device.type != "cpu":
            spec = _replace(spec, note=f"device {obj.device}")
        return spec
    if isinstance(obj, types.ModuleType):
        return Spec(name=name, type="module", kind="module", examples=str(getattr(obj, "__name__", "")),
                    doc=_first_line(getattr(obj, "__doc__", None), limits.repr_chars))
    if type(obj) in _SCALARS or (np is not None and isinstance(obj, np.generic)):
        text, cut = _bounded(repr(obj), limits.repr_chars)
        length = len(obj) if isinstance(obj, (str, bytes)) else None
        return Spec(name=name, type=tname, kind="scalar", length=length, examples=text, truncated=cut)
    if _is_trusted_container(obj):
        return _describe_container(obj, name, tname, limits)
    if callable(obj) and isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type,
                                          types.BuiltinMethodType)) or isinstance(obj, _functools_partial()):
        return _describe_callable(obj, name, tname, limits)
    return _describe_object(obj, name, tname, limits, budget, fork_repr)


def _describe_frame(df, name, tname, limits, budget) -> Spec:
    rows, ncols = df.shape
    shown = min(ncols, limits.max_columns)
    dtypes = df.dtypes
    columns = [Column(name=_label(df.columns[i]), dtype=str(dtypes.iloc[i])) for i in range(shown)]
    truncated = shown < ncols
    note = f"{ncols - shown} more columns" if truncated else ""
    examples = ""
    if budget.expired():
        truncated, note = True, _join(note, "example rows cut: out of time")
    elif rows and shown:
        head = df.iloc[: limits.max_rows, :shown]
        examples = _table(head, limits)
    return Spec(name=name, type=tname, kind="dataframe", shape=[int(rows), int(ncols)], columns=columns,
                examples=examples, truncated=truncated, note=note)


def _describe_series(s, name, tname, limits, budget) -> Spec:
    examples, truncated, note = "", False, ""
    if budget.expired():
        truncated, note = True, "examples cut: out of time"
    elif len(s):
        examples = _table(s.iloc[: limits.max_rows].to_frame(), limits)
    if s.name is not None:
        note = _join(f"series name {_label(s.name)}", note)
    return Spec(name=name, type=tname, kind="series", shape=[int(len(s))], dtype=str(s.dtype),
                examples=examples, truncated=truncated, note=note)


def _describe_array(a, name, tname, limits, budget, dtype, *, kind="array") -> Spec:
    shape = [int(d) for d in a.shape]
    examples, truncated, note = "", False, ""
    size = 1
    for d in shape:
        size *= d
    if budget.expired():
        truncated, note = True, "examples cut: out of time"
    elif size:
        # The first elements of the first row: a view, so nothing big is copied or printed.
        first = a[(0,) * (len(shape) - 1)] if len(shape) > 1 else a
        values = first[: limits.max_rows].tolist() if shape else a.tolist()
        examples, truncated = _bounded(repr(values), limits.repr_chars)
        if len(shape) > 1 or (shape and shape[0] > limits.max_rows):
            note = "examples: the first elements of the first row"
    return Spec(name=name, type=tname, kind=kind, shape=shape, dtype=dtype, examples=examples,
                truncated=truncated, note=note)


def _describe_container(obj, name, tname, limits) -> Spec:
    return Spec(name=name, type=tname, kind="container", length=len(obj),
                element_type=_element_type(obj, limits.sample, depth=3),
                examples=safe_repr(obj, limits.repr_chars, items=limits.max_rows))


def _describe_callable(obj, name, tname, limits) -> Spec:
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = ""
    return Spec(name=name, type=tname, kind="callable", signature=_bounded(signature, limits.repr_chars)[0],
                doc=_first_line(getattr(obj, "__doc__", None), limits.repr_chars))


def _describe_object(obj, name, tname, limits, budget, fork_repr) -> Spec:
    if _trusted_repr(type(obj)):
        text, cut = _bounded(repr(obj), limits.repr_chars)
        return Spec(name=name, type=tname, examples=text, truncated=cut)
    if not fork_repr:
        return Spec(name=name, type=tname, truncated=True, note="user-defined __repr__ not run")
    timeout = min(limits.repr_timeout_s, max(0.0, budget.left_s()))
    text, error = _repr_in_fork(obj, timeout, limits.repr_chars)
    if error:
        return Spec(name=name, type=tname, truncated=True, note=error)
    text, cut = _bounded(text, limits.repr_chars)
    return Spec(name=name, type=tname, examples=text, truncated=cut)


def _repr_in_fork(obj: object, timeout_s: float, chars: int) -> tuple[str, str]:
    """(repr, "") or ("", why not): a user-defined ``__repr__`` may raise, hang or write files."""
    from . import forking  # the fork machinery is only needed for user-defined reprs

    if not forking.fork_available():
        return "", "user-defined __repr__ not run: no fork on this platform"
    fenced, why = forking.sandbox_status()  # without the OS fence a user's repr does not run
    if not fenced:
        return "", "user-defined __repr__ not run: " + why.removeprefix("not validated: ")
    if timeout_s <= 0:
        return "", "repr cut: out of time"

    def child(fd: int) -> None:
        forking.enter_sandbox(keep_fd=fd, timeout_s=timeout_s, memory_mb=256)
        try:
            text = "ok:" + repr(obj)[: chars + 1]
        except BaseException as exc:  # noqa: BLE001
            text = "err:" + _exc_text(exc)
        _write_all(fd, text.encode("utf-8", "replace"))

    started = time.perf_counter()
    (outcome,) = forking.collect([forking.spawn(child)], deadline=time.monotonic() + timeout_s)
    data = outcome.data.decode("utf-8", "replace")
    if data.startswith("ok:"):
        return data[3:], ""
    if data.startswith("err:"):
        return "", f"repr raised {data[4:]}"
    if outcome.killed:
        return "", f"repr cut: still running after {1000 * (time.perf_counter() - started):.0f} ms"
    return "", "repr cut: the process computing it died"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ----------------------------------------------------------------------------------------------
# Rendering pieces


def type_name(cls: type) -> str:
    """``pandas.DataFrame`` rather than ``pandas.core.frame.DataFrame``; ``int`` for builtins."""
    module = getattr(cls, "__module__", "") or ""
    qual = getattr(cls, "__qualname__", getattr(cls, "__name__", "?"))
    if module == "builtins":
        return qual
    root = module.split(".")[0]
    top = sys.modules.get(root)
    if top is not None and getattr(top, qual, None) is cls:
        return f"{root}.{qual}"
    return f"{module}.{qual}" if module else qual


def _type_name_safe(obj: object) -> str:
    try:
        return type_name(type(obj))
    except Exception:  # noqa: BLE001
        return "?"


def safe_repr(obj: object, limit: int = 300, *, items: int = 3) -> str:
    """A repr of ``obj`` at most ``limit`` characters long, calling only trusted reprs.

    Containers are rendered here, element by element (``items`` of them), so that a huge list
    is never turned into one huge string; untrusted objects show as ``<module.Class object>``.
    """
    text = _safe_repr(obj, limit + 1, items, depth=3)
    return _bounded(text, limit)[0]


def _safe_repr(obj: object, limit: int, items: int, depth: int) -> str:
    if type(obj) in _SCALARS:
        r = repr(obj)
        return r if len(r) <= limit else r[:limit]
    if _is_trusted_container(obj) and depth > 0:
        if isinstance(obj, dict):
            parts = [f"{_safe_repr(k, limit, items, depth - 1)}: {_safe_repr(v, limit, items, depth - 1)}"
                     for k, v in itertools.islice(obj.items(), items)]
            open_, close = "{", "}"
        else:
            parts = [_safe_repr(v, limit, items, depth - 1) for v in itertools.islice(obj, items)]
            open_, close = _BRACKETS.get(type(obj), (f"{type(obj).__name__}([", "])"))
            if type(obj) is tuple and len(obj) == 1:
                close = ",)"
        if len(obj) > items:
            parts.append(f"... {len(obj) - items} more")
        return open_ + ", ".join(parts) + close
    if _trusted_repr(type(obj)) and not _is_big(obj):
        r = repr(obj)
        return r if len(r) <= limit else r[:limit]
    return f"<{_type_name_safe(obj)} object>"


def _is_big(obj: object) -> bool:
    """Arrays and frames nested in containers get no repr: their specs say more."""
    return hasattr(type(obj), "shape") and type(obj).__module__.split(".")[0] in ("numpy", "pandas", "torch") \
        and not isinstance(obj, sys.modules["numpy"].generic if "numpy" in sys.modules else ())


def _element_type(obj: object, sample: int, depth: int) -> str:
    if depth <= 0 or not _is_trusted_container(obj) or not len(obj):
        return ""
    if isinstance(obj, dict):
        pairs = list(itertools.islice(obj.items(), sample))
        keys = _union(_short_type(k, sample, depth - 1) for k, _ in pairs)
        values = _union(_short_type(v, sample, depth - 1) for _, v in pairs)
        return f"{keys}: {values}"
    return _union(_short_type(v, sample, depth - 1) for v in itertools.islice(obj, sample))


def _short_type(obj: object, sample: int, depth: int) -> str:
    name = type_name(type(obj))
    inner = _element_type(obj, sample, depth) if _is_trusted_container(obj) else ""
    if inner and isinstance(obj, dict):
        return f"{name}[{inner.replace(': ', ', ', 1)}]"
    return f"{name}[{inner}]" if inner else name


def _union(names: Iterable[str]) -> str:
    return " | ".join(dict.fromkeys(names))


def _is_trusted_container(obj: object) -> bool:
    """Builtin containers and the collections ones, not user subclasses (their methods may run code)."""
    cls = type(obj)
    if cls in _CONTAINERS:
        return True
    collections = sys.modules.get("collections")
    return collections is not None and cls in (collections.deque, collections.OrderedDict,
                                               collections.defaultdict, collections.Counter)


def _trusted_repr(cls: type) -> bool:
    for klass in cls.__mro__:
        if "__repr__" in klass.__dict__:
            return (getattr(klass, "__module__", "") or "").split(".")[0] in _TRUSTED_MODULES
    return True  # pragma: no cover - object defines __repr__


def _table(frame, limits: Limits) -> str:
    """``frame.to_string()`` of a few rows, with untrusted cells rendered by ``safe_repr``."""
    object_columns = [i for i, dt in enumerate(frame.dtypes) if str(dt) == "object"]
    if object_columns:
        frame = frame.copy()
        for i in object_columns:
            frame.isetitem(i, [safe_repr(v, 40, items=2) for v in frame.iloc[:, i]])
    text = frame.to_string(max_colwidth=40)
    return _bounded(text, limits.repr_chars * max(1, limits.max_rows))[0]


def _label(value: object) -> str:
    return value if isinstance(value, str) else safe_repr(value, 60)


# A memory address in a default repr ("<Generator(PCG64) at 0x7F4E...>", "<foo.Bar object at 0x7f...>"):
# it differs from one run to the next, so identical requests would get different prompts and
# different suggestions. The type and contents around it stay.
_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]{4,16}")


def _bounded(text: str, limit: int) -> tuple[str, bool]:
    """``text`` without memory addresses, cut to ``limit`` characters (and whether it was cut)."""
    text = _ADDRESS.sub("", text)
    if len(text) <= limit:
        return text, False
    return text[: max(0, limit - 3)] + "...", True


def _first_line(doc: object, limit: int) -> str:
    if not isinstance(doc, str):
        return ""
    for line in doc.strip().splitlines():
        if line.strip():
            return _bounded(line.strip(), limit)[0]
    return ""


def _exc_text(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a __str__ that raises
        message = "<unprintable>"
    return _bounded(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, 300)[0]


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _replace(spec: Spec, **changes) -> Spec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _functools_partial() -> type:
    import functools

    return functools.partial
