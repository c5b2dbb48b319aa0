"""The kernel extension: a comm target answering ``specs``, ``validate``, ``log`` and ``cursor`` requests.

Loaded into kernels started by the server (see ``autoload.py``) or by hand with
``%load_ext jupyter_specgen.kernel``. Requests arrive as comm messages (``messages.py``):

- ``specs`` may arrive on a subshell (ipykernel 7) and is then answered while a cell runs;
- ``validate`` must arrive on the main shell, so that it runs between cells: the children are
  forked there, the kernel goes back to work at once, and a thread waits for them and replies.
  A request that arrives mid-cell (an ``await``-ing cell lets comm messages through) or after
  its deadline is answered "not_validated" without forking;
- ``log`` returns the execution log, filled by ``pre_run_cell``/``post_run_cell`` hooks;
- ``cursor`` lists the names that can follow at the cursor (``cursor.py``). It may arrive on
  either shell: what needs no fork is answered at once; an expression that could run user code
  is evaluated in a fork only between cells (the same reason as ``validate``), and a thread
  waits for the fork and replies. Mid-cell (on the subshell) it is not evaluated.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
import weakref
from typing import Any

from .execlog import ExecLogOptions, ExecutionLog
from .messages import (
    COMM_TARGET,
    CursorReply,
    CursorRequest,
    LogReply,
    LogRequest,
    ProtocolError,
    SpecsReply,
    SpecsRequest,
    ValidateReply,
    ValidateRequest,
    decode,
    error_reply,
    to_data,
)
from .names import referenced_names
from .specs import Limits, describe_names
from . import cursor as cursor_names
from . import validate as validation

__all__ = ["KernelExtension", "load_ipython_extension", "unload_ipython_extension"]

log = logging.getLogger(__name__)

# IPython's output cache and input history names (_, __, _3, _i, _ii3, _oh, ...).
_IPYTHON_CACHE = re.compile(r"_+|_i+\d*|_\d+|_[ido]h|__builtin__|__builtins__|__name__|__doc__")

# One extension per shell, so that unload finds what load registered (IPython calls both with
# the shell only). Weak, so a discarded shell takes its extension with it.
_LOADED: "weakref.WeakKeyDictionary[Any, KernelExtension]" = weakref.WeakKeyDictionary()


def load_ipython_extension(ip) -> None:
    """IPython entry point (``%load_ext jupyter_specgen.kernel``)."""
    if ip in _LOADED:
        return
    ext = KernelExtension(ip)
    ext.register()
    _LOADED[ip] = ext


def unload_ipython_extension(ip) -> None:
    ext = _LOADED.pop(ip, None)
    if ext is not None:
        ext.unregister()


class _Hidden:
    """Names the user did not define: IPython's own and its caches."""

    def __init__(self, ip):
        self._ip = ip

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._ip.user_ns_hidden or bool(_IPYTHON_CACHE.fullmatch(name)))


class KernelExtension:
    """Answers the server's comm requests from the live namespace of ``ip``."""

    def __init__(self, ip, *, log_options: ExecLogOptions = ExecLogOptions(),
                 validate_options: validation.ValidateOptions = validation.ValidateOptions()):
        self.ip = ip
        self.execlog = ExecutionLog(log_options)
        self.validate_options = validate_options
        self._hidden = _Hidden(ip)
        self._executing = False  # between pre_run_cell and post_run_cell
        # The heads of the expressions at the cursor, until a cell runs (cursor.start's cache).
        self._cursor_cache: dict = {}
        self._comm_manager = None

    # -- registration ----------------------------------------------------------------------------

    def register(self) -> None:
        events = self.ip.events
        events.register("pre_run_cell", self._pre_run_cell)
        events.register("post_run_cell", self._post_run_cell)
        kernel = getattr(self.ip, "kernel", None)
        manager = getattr(kernel, "comm_manager", None)
        if manager is None:
            log.warning("jupyter_specgen: no comm manager (not an ipykernel?); only the execution log is kept")
            return
        manager.register_target(COMM_TARGET, self._open)
        self._comm_manager = manager
        # Compile and probe the validation sandbox now, not inside the first request's budget.
        validation.forking.sandbox_status()

    def unregister(self) -> None:
        events = self.ip.events
        for name, callback in (("pre_run_cell", self._pre_run_cell), ("post_run_cell", self._post_run_cell)):
            try:
                events.unregister(name, callback)
            except ValueError:
                pass
        if self._comm_manager is not None:
            self._comm_manager.unregister_target(COMM_TARGET, self._open)
            self._comm_manager = None

    # -- hooks -----------------------------------------------------------------------------------

    # pre_run_cell/post_run_cell, not pre_execute/post_execute: the comm package fires those
    # around every comm message too, so they would call our own request handler "a cell".
    def _pre_run_cell(self, info) -> None:
        self._executing = True
        self._cursor_cache = {}
        try:
            self.execlog.before(info.raw_cell or "", self.ip.user_ns, hidden=self._hidden)
        except Exception:  # noqa: BLE001 - never break the user's cell
            log.warning("jupyter_specgen: execution log failed before a cell", exc_info=True)

    def _post_run_cell(self, result) -> None:
        self._executing = False
        self._cursor_cache = {}  # the cell may have changed any value (what ran mid-cell is stale too)
        try:
            error = result.error_in_exec or result.error_before_exec
            self.execlog.after(result.execution_count or 0, self.ip.user_ns, success=bool(result.success),
                               error=f"{type(error).__name__}: {error}"[:500] if error else "", hidden=self._hidden)
        except Exception:  # noqa: BLE001
            log.warning("jupyter_specgen: execution log failed after a cell", exc_info=True)

    # -- the comm --------------------------------------------------------------------------------

    def _open(self, comm, open_msg) -> None:
        comm.on_msg(lambda msg: self.handle(comm, msg))

    def handle(self, comm, msg) -> None:
        """Answer one comm message; every request gets exactly one reply."""
        data = msg.get("content", {}).get("data")
        try:
            request = decode(data)
        except ProtocolError as exc:
            comm.send(to_data(error_reply(exc.reply_to, exc.error_type, exc.message)))
            return
        try:
            if isinstance(request, SpecsRequest):
                comm.send(to_data(self.specs(request)))
            elif isinstance(request, LogRequest):
                comm.send(to_data(LogReply(reply_to=request.id, entries=self.execlog.entries(request.limit),
                                           dropped=self.execlog.dropped)))
            elif isinstance(request, ValidateRequest):
                self._validate(comm, request)
            elif isinstance(request, CursorRequest):
                self._cursor(comm, request)
            else:
                comm.send(to_data(error_reply(getattr(request, "reply_to", None), "unknown_type",
                                              f"the kernel extension does not answer {type(request).type!r} messages")))
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave the request pending
            log.error("jupyter_specgen: request %r failed", getattr(request, "id", None), exc_info=True)
            comm.send(to_data(error_reply(getattr(request, "id", None), "internal", f"{type(exc).__name__}: {exc}")))

    def specs(self, request: SpecsRequest) -> SpecsReply:
        started = time.perf_counter()
        names = list(request.names) + referenced_names(request.code)
        limits = Limits(max_rows=max(0, min(request.max_rows, 20)))
        specs, missing, skipped = describe_names(self.ip.user_ns, names, budget_ms=request.budget_ms,
                                                 limits=limits, hidden=self._hidden)
        return SpecsReply(reply_to=request.id, specs=specs, missing=missing, skipped=skipped,
                          execution_count=self.ip.execution_count,
                          elapsed_ms=round((time.perf_counter() - started) * 1000, 3))

    def _cursor(self, comm, request: CursorRequest) -> None:
        started = time.perf_counter()
        count = self.ip.execution_count
        stale = bool(request.deadline_ms) and time.time() * 1000 > request.deadline_ms
        # Fork only between cells: a namespace mid-cell is not a state worth reading. The client
        # asks an idle kernel on the main shell; a request on the subshell from a client whose view
        # lags (the cell just ended) may fork too: the child only reads, and is killed at its grace
        # should it inherit a lock another thread held.
        may_fork = not self._executing and not stale
        result = cursor_names.start(
            self.ip.user_ns, request.before, request.after, notebook=request.notebook, hidden=self._hidden,
            budget_ms=max(0, min(request.budget_ms, 2000)), max_names=max(1, min(request.max_names, 20000)),
            may_fork=may_fork, cache=self._cursor_cache,
        )

        def send(answer: cursor_names.Answer) -> None:
            comm.send(to_data(CursorReply(
                reply_to=request.id, kind=answer.kind, names=answer.names, typed=answer.typed,
                required=answer.required, note=answer.note, execution_count=count,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 3))))

        if not isinstance(result, cursor_names.Pending):
            send(result)
            return

        def reply() -> None:
            try:
                send(cursor_names.finish(result))
            except Exception as exc:  # noqa: BLE001
                log.error("jupyter_specgen: cursor request %r failed", request.id, exc_info=True)
                comm.send(to_data(error_reply(request.id, "internal", f"{type(exc).__name__}: {exc}")))
            finally:
                cursor_names.settle(result)  # a fork still running finishes into the cache, or is killed

        context = contextvars.copy_context()  # keeps the parent header: the reply goes to the main shell
        threading.Thread(target=context.run, args=(reply,), name="specgen-cursor", daemon=True).start()

    def _validate(self, comm, request: ValidateRequest) -> None:
        count = self.ip.execution_count
        why = ""
        if self._executing:
            why = "not validated: the kernel is running a cell"
        elif request.deadline_ms and time.time() * 1000 > request.deadline_ms:
            why = "not validated: the kernel stayed busy past the budget"
        if why:
            verdicts = [validation.not_validated(i, why) for i in range(len(request.candidates))]
            comm.send(to_data(ValidateReply(reply_to=request.id, verdicts=verdicts, execution_count=count)))
            return
        options = validation.ValidateOptions(
            timeout_s=max(0.01, request.timeout_ms / 1000), memory_mb=max(16, request.memory_mb),
            output_chars=self.validate_options.output_chars, max_candidates=self.validate_options.max_candidates,
            spec_budget_ms=self.validate_options.spec_budget_ms, limits=self.validate_options.limits,
            cursor=len(request.prefix), notebook=tuple(request.notebook),
        )
        pending = validation.start(self.ip.user_ns, request.candidates, prefix=request.prefix, suffix=request.suffix,
                                   options=options, transform=self.ip.transform_cell)

        def reply() -> None:
            try:
                verdicts = validation.finish(pending)
                comm.send(to_data(ValidateReply(reply_to=request.id, verdicts=verdicts, execution_count=count)))
            except Exception as exc:  # noqa: BLE001
                log.error("jupyter_specgen: validation %r failed", request.id, exc_info=True)
                comm.send(to_data(error_reply(request.id, "internal", f"{type(exc).__name__}: {exc}")))

        # The reply keeps the parent header of this request (a context variable in ipykernel 7),
        # so that ipykernel routes any answer to this comm back to the main shell, not a subshell.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(reply,), name="specgen-validate", daemon=True).start()
