"""A bounded log of the cells the user ran, with the state each one read and left.

Each entry: the code (bounded), whether it succeeded, the specs of the names it referred to
before it ran and of the names it assigned after. Kept in a ring buffer; the server collects it
with a ``log`` request to turn it into training data.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Optional

from .messages import LogEntry, Spec
from .names import assigned_names, referenced_names
from .specs import Limits, describe_names

__all__ = ["ExecLogOptions", "ExecutionLog", "OWN_CODE_MARK"]

# Code that jupyter-specgen's own front ends run in the kernel begins so (the VS Code extension
# asks the kernel which Jupyter server started it: vscode/src/discover.ts); it is never training data.
OWN_CODE_MARK = "def __specgen_"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecLogOptions:
    capacity: int = 200  # entries kept; older ones are dropped
    code_chars: int = 20_000  # code kept per entry
    budget_ms: float = 10.0  # per side (before, after): this delays the user's cell
    limits: Limits = Limits(max_rows=2, max_columns=30, repr_chars=200)


class ExecutionLog:
    """Call ``before`` from ``pre_run_cell`` and ``after`` from ``post_run_cell``."""

    def __init__(self, options: ExecLogOptions = ExecLogOptions()):
        self.options = options
        self._entries: collections.deque[LogEntry] = collections.deque(maxlen=options.capacity)
        self.dropped = 0
        self._current: Optional[tuple[str, list[Spec], float, float]] = None

    def before(self, code: str, namespace: Mapping[str, object], *, hidden: Container[str] = ()) -> None:
        if code.startswith(OWN_CODE_MARK):
            self._current = None  # our own front end's code (the VS Code extension's), not the user's work
            return
        read, _, _ = describe_names(namespace, referenced_names(code), budget_ms=self.options.budget_ms,
                                    limits=self.options.limits, hidden=hidden, fork_repr=False)
        self._current = (code, read, time.time(), time.perf_counter())

    def after(self, execution_count: int, namespace: Mapping[str, object], *, success: bool, error: str = "",
              hidden: Container[str] = ()) -> None:
        if self._current is None:  # the extension was loaded by this very cell
            return
        code, read, started, t0 = self._current
        self._current = None
        duration_ms = (time.perf_counter() - t0) * 1000
        assigned, _, _ = describe_names(namespace, assigned_names(code), budget_ms=self.options.budget_ms,
                                        limits=self.options.limits, hidden=hidden, fork_repr=False)
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        self._entries.append(LogEntry(
            execution_count=execution_count, code=code[: self.options.code_chars], success=success,
            error=error, read=read, assigned=assigned, started=started, duration_ms=round(duration_ms, 3),
        ))

    def entries(self, limit: int) -> list[LogEntry]:
        """The last ``limit`` entries, oldest first."""
        if limit <= 0:
            return []
        return list(self._entries)[-limit:]
