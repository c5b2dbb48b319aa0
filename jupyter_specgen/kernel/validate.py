"""Run candidate cells in forks of the kernel and report what happened, never touching the kernel.

``start`` forks one child per candidate, at once, so that all of them see the same snapshot of
the namespace; it must be called while the kernel is idle (a namespace mid-cell is not a state
worth forking) and returns quickly. ``finish`` waits for the children (each has the same
wall-clock deadline), kills the late ones and turns their reports into ``Verdict``s; it may run
on any thread. ``validate`` does both.

In each child: the fence of ``forking.enter_sandbox``, then the cell (``prefix + candidate +
suffix``, IPython syntax transformed as the kernel would) runs against the child's copy of the
user's namespace, then the child reports as JSON on a pipe: ran or raised (type, message, line),
stdout/stderr, a spec of the last expression's value and of the names the cell assigned.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from specgen_backend.protocol import ProtocolError, build

from . import exercise, forking
from .messages import MAX_VALIDATE_CANDIDATES, Verdict
from .names import assigned_names
from .specs import Budget, Limits, describe

__all__ = ["ValidateOptions", "Pending", "start", "finish", "validate", "not_validated"]

log = logging.getLogger(__name__)

_FILENAME = "<candidate>"


@dataclass(frozen=True)
class ValidateOptions:
    """Limits of one validation run."""

    timeout_s: float = 2.0  # wall clock per child, from fork to report
    memory_mb: int = 1024  # address space a child may add to what it inherits
    output_chars: int = 2000  # stdout and stderr kept, each
    max_candidates: int = MAX_VALIDATE_CANDIDATES  # children alive at once; later candidates are not validated
    spec_budget_ms: float = 30.0  # to describe the value and the assigned names
    limits: Limits = Limits()
    # Where the cursor is in the cell (the length of the prefix; -1: unknown) and the notebook's
    # code cells: with the cursor in a function body, the notebook's calls of it are made.
    cursor: int = -1
    notebook: tuple[str, ...] = ()


@dataclass
class Pending:
    """Children started by ``start``; hand to ``finish``."""

    children: list[Optional[forking.Child]]  # None: not started (see ``reasons``)
    reasons: dict[int, str]
    deadline: float  # time.monotonic()


def not_validated(index: int, why: str) -> Verdict:
    return Verdict(index=index, status="not_validated", message=why)


def validate(
    namespace: dict, candidates: Sequence[str], *, prefix: str = "", suffix: str = "",
    options: ValidateOptions = ValidateOptions(), transform: Any = None,
) -> list[Verdict]:
    """Run each candidate in its own fork; one verdict per candidate, in order."""
    return finish(start(namespace, candidates, prefix=prefix, suffix=suffix, options=options, transform=transform))


def start(
    namespace: dict, candidates: Sequence[str], *, prefix: str = "", suffix: str = "",
    options: ValidateOptions = ValidateOptions(), transform: Any = None,
) -> Pending:
    """Fork one child per candidate. ``transform``: IPython's ``transform_cell``, if any."""
    children: list[Optional[forking.Child]] = []
    reasons: dict[int, str] = {}
    # Without the operating system's fence nothing runs (computed once; the first call
    # compiles the filter and probes it, before the deadline starts).
    fenced, why_not = forking.sandbox_status()
    deadline = time.monotonic() + options.timeout_s
    for index, candidate in enumerate(candidates):
        if not forking.fork_available():
            reasons[index] = "not validated: this platform cannot fork"
        elif not fenced:
            reasons[index] = why_not
        elif index >= options.max_candidates:
            reasons[index] = f"not validated: more than {options.max_candidates} candidates"
        if index in reasons:
            children.append(None)
            continue
        cell = prefix + candidate + suffix
        try:
            children.append(forking.spawn(_child_main(namespace, cell, options, transform)))
        except OSError as exc:  # out of processes or memory: say so, offer the rest
            log.warning("could not fork to validate a candidate: %s", exc)
            reasons[index] = f"not validated: fork failed ({exc})"
            children.append(None)
    return Pending(children=children, reasons=reasons, deadline=deadline)


def finish(pending: Pending) -> list[Verdict]:
    """Wait for the children of ``pending`` (until its deadline) and build their verdicts."""
    started = [c for c in pending.children if c is not None]
    outcomes = iter(forking.collect(started, deadline=pending.deadline))
    verdicts = []
    for index, child in enumerate(pending.children):
        if child is None:
            verdicts.append(not_validated(index, pending.reasons.get(index, "not validated")))
        else:
            verdicts.append(_verdict(index, next(outcomes)))
    return verdicts


def _verdict(index: int, outcome: forking.Outcome) -> Verdict:
    elapsed_ms = round(outcome.elapsed * 1000, 2)
    if outcome.data:
        try:
            report = json.loads(outcome.data)
            verdict = build(Verdict, {**report, "index": index, "elapsed_ms": elapsed_ms}, path="verdict")
            # A whole report is written after the cell returned, and the child then only exits
            # (threads die with it): killed at the deadline while exiting, its verdict stands.
            return verdict
        except (ValueError, ProtocolError) as exc:
            log.debug("unreadable report from candidate %d: %s", index, exc)
    if outcome.killed:
        return Verdict(index=index, status="timeout", message=f"still running after {elapsed_ms:.0f} ms; killed",
                       elapsed_ms=elapsed_ms)
    if outcome.signal is not None:
        name = signal.Signals(outcome.signal).name if outcome.signal in signal.Signals._value2member_map_ else str(outcome.signal)
        why = {"SIGXCPU": "CPU time limit reached", "SIGKILL": "killed (memory or CPU limit)"}.get(name, "")
        return Verdict(index=index, status="crashed", message=f"died of {name}" + (f": {why}" if why else ""),
                       elapsed_ms=elapsed_ms)
    return Verdict(index=index, status="crashed", message=f"ended without a report (exit code {outcome.exit_code})",
                   elapsed_ms=elapsed_ms)


# ----------------------------------------------------------------------------------------------
# In the child


def _child_main(namespace: dict, cell: str, options: ValidateOptions, transform: Any):
    def main(fd: int) -> None:
        try:
            box = forking.enter_sandbox(
                keep_fd=fd, timeout_s=options.timeout_s, memory_mb=options.memory_mb, output_chars=options.output_chars
            )
        except forking.SandboxUnavailable as exc:  # nothing of the candidate has run; say why
            message = str(exc) if str(exc).startswith("not validated") else f"not validated: the sandbox failed ({exc})"
            forking.os.write(fd, json.dumps({"status": "not_validated", "message": message}).encode())
            return
        report = _run(namespace, cell, options, transform)
        report.update(stdout=box.stdout.getvalue(), stderr=box.stderr.getvalue(), refused=list(box.refused))
        if report.get("status") == "raised":  # a refusal of the fence, in the fence's words
            clear = forking.refusal_message(str(report.get("message", "")))
            if clear:
                report["message"] = clear
                if clear not in report["refused"] and len(report["refused"]) < 20:
                    report["refused"].append(clear)
        try:
            data = json.dumps(report, separators=(",", ":"), default=str).encode("utf-8", "replace")
        except (TypeError, ValueError) as exc:
            data = json.dumps({"status": "raised", "error_type": "ReportError", "message": str(exc)}).encode()
        view = memoryview(data)
        while view:
            view = view[forking.os.write(fd, view):]

    return main


def _run(namespace: dict, cell: str, options: ValidateOptions, transform: Any) -> dict:
    """Execute ``cell`` in ``namespace`` like IPython does; what happened, as Verdict fields.

    An unfinished statement is closed and run ("incomplete"); with the cursor in a function body
    the function is then called as the notebook calls it ("defined" when no call is found): see
    ``exercise.py``.
    """
    value: Any = None
    has_value = False
    try:
        source = transform(cell) if transform is not None else cell
        prepared = exercise.prepare(source, filename=_FILENAME, cursor=_cursor_at(cell, options.cursor))
        tree = prepared.tree
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, _FILENAME, "exec"), namespace)  # noqa: S102 - in the fenced child only
        if last is not None:
            value = eval(compile(ast.Expression(last.value), _FILENAME, "eval"), namespace)  # noqa: S307
            has_value = value is not None
        report: dict[str, Any] = {"status": "incomplete" if prepared.incomplete else "ran"}
        if prepared.target is not None and not prepared.calls_in_cell:
            calls = exercise.calls_of(prepared.target, options.notebook, transform=transform)
            outcome, error, called = exercise.exercise(prepared.target, namespace, calls, filename=_FILENAME)
            if outcome == "raised" and error is not None:
                report = {"status": "raised", "error_type": type(error).__name__,
                          "message": f"{_message(error)} (calling {called})"[:600], "line": _line(error)}
            elif outcome == "defined":
                report = {"status": "defined", "message": "defined, not exercised"
                          + (" (an unfinished statement)" if prepared.incomplete else "")}
            else:
                report["message"] = f"exercised: {called}"[:600]
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, GuardExit: report them all
        report = {"status": "raised", "error_type": type(exc).__name__, "message": _message(exc),
                  "line": _line(exc)}
    # CPU time, not wall time: the budget bounds the work of describing, and a child that waits for a
    # core on a busy machine has done none (the candidate's deadline still bounds the wall time).
    budget = Budget(options.spec_budget_ms, clock=time.process_time)
    if has_value:
        report["value"] = dataclasses.asdict(describe(value, "<value>", limits=options.limits, budget=budget))
    assigned = []
    for name in assigned_names(cell):
        if name in namespace and not budget.expired():
            assigned.append(dataclasses.asdict(describe(namespace[name], name, limits=options.limits, budget=budget)))
    report["assigned"] = assigned
    return report


def _cursor_at(cell: str, cursor: int) -> tuple[int, int]:
    """(1-based line, column) of offset ``cursor`` in ``cell``; (0, 0) when unknown."""
    if cursor < 0 or cursor > len(cell):
        return (0, 0)
    head = cell[:cursor]
    return head.count("\n") + 1, len(head) - (head.rfind("\n") + 1)


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001
        text = "<unprintable>"
    return text if len(text) <= 500 else text[:497] + "..."


def _line(exc: BaseException) -> int:
    if isinstance(exc, SyntaxError) and exc.filename == _FILENAME:
        return exc.lineno or 0
    line = 0
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


