"""The server side of the kernel comm: ask a live kernel for specs, have it validate candidates.

``KernelLinks`` (one per server, owned by the server extension) keeps one ``KernelLink`` per
kernel id. A link is its own ``jupyter_client`` client of the kernel: it opens two comms to the
kernel extension's target, one on a subshell when the kernel has them (ipykernel 7, JEP 91) for
``specs`` (answered while a cell runs) and one on the main shell for ``validate`` (answered
between cells: that is when the kernel may be forked) and ``log``. Replies come back on IOPub,
which the link also watches to know whether a cell is running and when the execution count
changes; specs are cached until it does.

Nothing here waits longer than asked: a busy kernel without subshells means "no specs"
(``None``), a kernel that does not answer ``validate`` in time means "not_validated" verdicts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Optional

from .kernel.messages import (
    COMM_TARGET,
    CursorReply,
    CursorRequest,
    Error,
    LogReply,
    LogRequest,
    ProtocolError,
    Spec,
    SpecsReply,
    SpecsRequest,
    ValidateReply,
    ValidateRequest,
    Verdict,
    decode,
    to_data,
)
from .kernel.names import referenced_names

__all__ = ["KernelLinkError", "KernelLink", "KernelLinks"]

log = logging.getLogger(__name__)


class KernelLinkError(Exception):
    """The kernel cannot be talked to: dead, not an ipykernel, or the extension is not loaded."""


class KernelLink:
    """One client of one kernel, speaking the specgen comm protocol. Use ``connect``."""

    def __init__(self, client: Any):
        self.client = client
        self.subshell_id: Optional[str] = None
        self.busy = False  # a cell is running (seen on IOPub)
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False
        self._spec_comm = uuid.uuid4().hex  # on the subshell when there is one
        self._main_comm = uuid.uuid4().hex  # on the main shell
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future] = {}
        self._reader: Optional[asyncio.Task] = None
        self._control_waiters: dict[str, asyncio.Future] = {}
        self._iopub_seen: set[str] = set()
        self._generation = 0  # bumped whenever a cell starts; keys the spec cache
        self._cache: dict[str, Optional[Spec]] = {}  # name → spec (None: not defined)
        self._cache_generation = -1

    @classmethod
    async def connect(cls, client: Any, *, timeout_s: float = 5.0, use_subshell: bool = True) -> "KernelLink":
        """Start ``client``'s channels, open the comms and check the extension answers.

        Raises ``KernelLinkError`` when the kernel does not answer within ``timeout_s`` or has no
        ``jupyter_specgen`` comm target.
        """
        link = cls(client)
        try:
            await asyncio.wait_for(link._connect(use_subshell), timeout_s)
        except (asyncio.TimeoutError, KernelLinkError) as exc:
            await link.close()
            if isinstance(exc, KernelLinkError):
                raise
            raise KernelLinkError(f"the kernel did not answer within {timeout_s:g} s (dead or busy?)") from None
        return link

    async def _connect(self, use_subshell: bool) -> None:
        if not self.client.channels_running:
            self.client.start_channels()
        self._reader = asyncio.ensure_future(self._read_iopub())
        # kernel_info on the control channel: answered even while a cell runs; its IOPub status
        # messages prove that our IOPub subscription is live (ZMQ drops what is published
        # before a subscription lands, so we ask until one arrives).
        features: list = []
        while True:
            msg_id = self._send_control("kernel_info_request", {})
            reply = await self._control_reply(msg_id, 0.5)
            if reply is not None:
                features = reply["content"].get("supported_features", []) or []
                for _ in range(5):
                    if msg_id in self._iopub_seen:
                        break
                    await asyncio.sleep(0.02)
                if msg_id in self._iopub_seen:
                    break
        if use_subshell and "kernel subshells" in features:
            msg_id = self._send_control("create_subshell_request", {})
            reply = await self._control_reply(msg_id, 5.0)
            if reply is not None and reply["content"].get("status") == "ok":
                self.subshell_id = reply["content"].get("subshell_id")
        self._send_shell("comm_open", {"comm_id": self._spec_comm, "target_name": COMM_TARGET, "data": {}},
                         subshell=True)
        self._send_shell("comm_open", {"comm_id": self._main_comm, "target_name": COMM_TARGET, "data": {}},
                         subshell=False)
        # A request on the spec comm proves the target exists (a missing one closes the comm).
        reply = await self._request(SpecsRequest(id=self._new_id(), budget_ms=1), self._spec_comm, subshell=True,
                                    timeout_s=None)
        if reply is None:
            raise KernelLinkError("the kernel extension did not answer")

    async def close(self) -> None:
        """Close the comms and the subshell, stop the client. Pending requests get ``None``."""
        if not self.closed and self.client.channels_running:
            for comm_id, sub in ((self._spec_comm, True), (self._main_comm, False)):
                self._send_shell("comm_close", {"comm_id": comm_id, "data": {}}, subshell=sub)
            if self.subshell_id:
                self._send_control("delete_subshell_request", {"subshell_id": self.subshell_id})
        self.closed = True
        self._fail_pending()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        try:
            self.client.stop_channels()
        except Exception:  # noqa: BLE001
            log.debug("stopping the kernel client failed", exc_info=True)
        # The client made its own zmq context (an I/O thread and its descriptors); it is destroyed
        # only when the client is garbage collected, which a long-lived server must not wait for.
        if getattr(self.client, "_created_context", False) and not self.client.context.closed:
            self.client.context.destroy(linger=0)

    # -- requests ----------------------------------------------------------------------------------

    async def specs(self, *, names: Sequence[str] = (), code: str = "", budget_ms: int = 50, max_rows: int = 3,
                    timeout_s: Optional[float] = None) -> Optional[SpecsReply]:
        """Specs of ``names`` and the names ``code`` refers to; ``None`` when the kernel is busy
        without subshells, or does not answer within ``timeout_s`` (default: the budget + 200 ms).

        Specs are cached until the next cell runs; only names not in the cache are asked for.
        """
        if self.closed or (self.busy and not self.subshell_id):
            return None
        wanted = list(dict.fromkeys(list(names) + referenced_names(code)))
        if self._cache_generation != self._generation:
            self._cache.clear()
            self._cache_generation = self._generation
        generation = self._generation
        ask = [n for n in wanted if n not in self._cache]
        reply: Optional[SpecsReply] = None
        if ask:
            request = SpecsRequest(id=self._new_id(), names=ask, budget_ms=budget_ms, max_rows=max_rows)
            timeout = timeout_s if timeout_s is not None else budget_ms / 1000 + 0.2
            reply = await self._request(request, self._spec_comm, subshell=True, timeout_s=timeout)
            if not isinstance(reply, SpecsReply):
                return None
            if generation == self._generation:  # no cell started meanwhile
                for spec in reply.specs:
                    self._cache[spec.name] = spec
                for name in reply.missing:
                    self._cache[name] = None
        fresh = {s.name: s for s in reply.specs} if reply else {}
        specs = [fresh.get(n) or self._cache.get(n) for n in wanted]
        return SpecsReply(
            reply_to=reply.reply_to if reply else "cache",
            specs=[s for s in specs if s is not None],
            missing=[n for n in wanted if n not in fresh and self._cache.get(n, 0) is None],
            skipped=list(reply.skipped) if reply else [],
            execution_count=reply.execution_count if reply else 0,
            elapsed_ms=reply.elapsed_ms if reply else 0.0,
        )

    async def validate(self, candidates: Sequence[str], *, prefix: str = "", suffix: str = "",
                       timeout_ms: int = 2000, memory_mb: int = 1024, wait_ms: int = 1000,
                       notebook: Sequence[str] = ()) -> list[Verdict]:
        """One verdict per candidate, in order. Waits at most ``wait_ms`` for the kernel to be
        idle, then ``timeout_ms`` for the children; whatever is not answered is "not_validated".

        ``notebook``: the sources of the notebook's code cells; with the cursor (the end of
        ``prefix``) in a function body, the kernel calls the function as they do.
        """
        candidates = list(candidates)
        if not candidates:
            return []
        if self.closed:
            return _not_validated(candidates, "not validated: no connection to the kernel")
        if self.busy:  # do not queue behind a long cell: wait a little, then give up
            try:
                await asyncio.wait_for(self._idle.wait(), wait_ms / 1000)
            except asyncio.TimeoutError:
                return _not_validated(candidates, "not validated: the kernel stayed busy past the budget")
        request = ValidateRequest(id=self._new_id(), candidates=candidates, prefix=prefix, suffix=suffix,
                                  timeout_ms=timeout_ms, memory_mb=memory_mb,
                                  deadline_ms=time.time() * 1000 + wait_ms, notebook=list(notebook))
        timeout = (wait_ms + timeout_ms) / 1000 + 1.0  # + forking, reporting and the round trip
        reply = await self._request(request, self._main_comm, subshell=False, timeout_s=timeout)
        if isinstance(reply, ValidateReply) and len(reply.verdicts) == len(candidates):
            return list(reply.verdicts)
        if isinstance(reply, Error):
            return _not_validated(candidates, f"not validated: {reply.error.message}")
        return _not_validated(candidates, "not validated: the kernel stayed busy or did not answer")

    async def execution_log(self, *, limit: int = 50, timeout_s: float = 2.0) -> Optional[LogReply]:
        """The last ``limit`` cells the user ran; ``None`` if the kernel does not answer in time."""
        if self.closed:
            return None
        reply = await self._request(LogRequest(id=self._new_id(), limit=limit), self._main_comm, subshell=False,
                                    timeout_s=timeout_s)
        return reply if isinstance(reply, LogReply) else None

    async def cursor(self, before: str, after: str = "", *, notebook: Sequence[str] = (), budget_ms: int = 60,
                     max_names: int = 4000, timeout_s: Optional[float] = None) -> Optional[CursorReply]:
        """The names that can follow at the cursor (``before``/``after``: the cell's text around it;
        ``notebook``: the sources of the notebook's code cells). ``None`` when the kernel does not
        answer within ``timeout_s`` (default: the budget + 200 ms).

        An idle kernel is asked on the main shell, where it may evaluate the expression before the
        cursor in a fork; a busy one on the subshell, which answers what needs no fork.
        """
        if self.closed or (self.busy and not self.subshell_id):
            return None
        request = CursorRequest(id=self._new_id(), before=before, after=after, notebook=list(notebook),
                                budget_ms=budget_ms, max_names=max_names,
                                deadline_ms=time.time() * 1000 + budget_ms)
        timeout = timeout_s if timeout_s is not None else budget_ms / 1000 + 0.2
        if self.busy:
            reply = await self._request(request, self._spec_comm, subshell=True, timeout_s=timeout)
        else:
            reply = await self._request(request, self._main_comm, subshell=False, timeout_s=timeout)
        return reply if isinstance(reply, CursorReply) else None

    # -- plumbing ----------------------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"specgen-{next(self._ids)}"

    async def _request(self, request: Any, comm_id: str, *, subshell: bool, timeout_s: Optional[float]) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        try:
            self._send_shell("comm_msg", {"comm_id": comm_id, "data": to_data(request)}, subshell=subshell)
            if timeout_s is None:
                return await future
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            log.debug("kernel request %s timed out after %s s", request.id, timeout_s)
            return None
        finally:
            self._pending.pop(request.id, None)

    def _send_shell(self, msg_type: str, content: dict, *, subshell: bool) -> None:
        msg = self.client.session.msg(msg_type, content)
        if subshell and self.subshell_id:
            msg["header"]["subshell_id"] = self.subshell_id
        self.client.shell_channel.send(msg)

    def _send_control(self, msg_type: str, content: dict) -> str:
        msg = self.client.session.msg(msg_type, content)
        self._control_waiters[msg["header"]["msg_id"]] = asyncio.get_running_loop().create_future()
        self.client.control_channel.send(msg)
        return msg["header"]["msg_id"]

    async def _control_reply(self, msg_id: str, timeout_s: float) -> Optional[dict]:
        deadline = time.monotonic() + timeout_s
        future = self._control_waiters[msg_id]
        try:
            while not future.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    msg = await self.client.control_channel.get_msg(timeout=left)
                except Exception:  # noqa: BLE001 - queue.Empty from jupyter_client on timeout
                    return None
                waiter = self._control_waiters.get(msg.get("parent_header", {}).get("msg_id"))
                if waiter is not None and not waiter.done():
                    waiter.set_result(msg)
            return future.result()
        finally:
            self._control_waiters.pop(msg_id, None)

    async def _read_iopub(self) -> None:
        while not self.closed:
            try:
                msg = await self.client.get_iopub_msg()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a malformed frame must not stop the reader
                log.debug("unreadable IOPub message", exc_info=True)
                continue
            try:
                self._on_iopub(msg)
            except Exception:  # noqa: BLE001
                log.warning("handling an IOPub message failed", exc_info=True)

    def _on_iopub(self, msg: dict) -> None:
        msg_type = msg["header"]["msg_type"]
        parent = msg.get("parent_header") or {}
        content = msg.get("content") or {}
        if parent.get("msg_id") and len(self._iopub_seen) < 64:
            self._iopub_seen.add(parent["msg_id"])
        if msg_type == "status":
            state = content.get("execution_state")
            if state == "starting":  # the kernel restarted: our comms and subshell are gone
                self.closed = True
                self._fail_pending()
            elif parent.get("msg_type") == "execute_request" and not parent.get("subshell_id"):
                self.busy = state == "busy"
                if self.busy:
                    self._generation += 1
                    self._idle.clear()
                else:
                    self._idle.set()
        elif msg_type == "execute_input":
            self._generation += 1
        elif msg_type == "comm_msg" and content.get("comm_id") in (self._spec_comm, self._main_comm):
            try:
                reply = decode(content.get("data"))
            except ProtocolError as exc:
                log.warning("malformed reply from the kernel extension: %s", exc.message)
                future = self._pending.get(exc.reply_to) if exc.reply_to is not None else None
                if future is not None and not future.done():
                    future.set_result(None)
                return
            future = self._pending.get(getattr(reply, "reply_to", None))
            if future is not None and not future.done():
                future.set_result(reply)
        elif msg_type == "comm_close" and content.get("comm_id") in (self._spec_comm, self._main_comm):
            log.info("the kernel closed the specgen comm (is the kernel extension loaded?)")
            self.closed = True
            self._fail_pending(KernelLinkError("the kernel has no jupyter_specgen comm target; "
                                               "load it with %load_ext jupyter_specgen.kernel"))

    def _fail_pending(self, exc: Optional[BaseException] = None) -> None:
        for future in list(self._pending.values()):
            if not future.done():
                if exc is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(None)


def _not_validated(candidates: Sequence[str], why: str) -> list[Verdict]:
    return [Verdict(index=i, status="not_validated", message=why) for i in range(len(candidates))]


class KernelLinks:
    """Links to the kernels of one server, by kernel id, made on first use.

    ``kernel_manager`` is the server's ``MappingKernelManager`` (or any jupyter_client
    ``MultiKernelManager``). Every method answers: ``None`` or "not_validated" verdicts when the
    kernel is unknown, dead, busy or lacks the extension; never an exception.
    """

    def __init__(self, kernel_manager: Any, *, connect_timeout_s: float = 5.0, use_subshell: bool = True):
        self.kernel_manager = kernel_manager
        self.connect_timeout_s = connect_timeout_s
        self.use_subshell = use_subshell
        self._links: dict[str, KernelLink] = {}
        self._connecting: dict[str, asyncio.Future] = {}
        self._failed: dict[str, float] = {}  # kernel id → time.monotonic() of the last failure

    async def link(self, kernel_id: str) -> Optional[KernelLink]:
        await self.sweep()
        link = self._links.get(kernel_id)
        if link is not None and not link.closed:
            return link
        if link is not None:
            self._links.pop(kernel_id, None)
            await link.close()
        if time.monotonic() - self._failed.get(kernel_id, -1e9) < 10.0:
            return None  # do not hammer a kernel that just failed to connect
        if kernel_id in self._connecting:
            return await asyncio.shield(self._connecting[kernel_id])
        future = asyncio.get_running_loop().create_future()
        self._connecting[kernel_id] = future
        try:
            link = await self._connect(kernel_id)
            if link is not None:
                self._links[kernel_id] = link
            else:
                self._failed[kernel_id] = time.monotonic()
            future.set_result(link)
            return link
        finally:
            self._connecting.pop(kernel_id, None)

    async def _connect(self, kernel_id: str) -> Optional[KernelLink]:
        from jupyter_client.asynchronous import AsyncKernelClient

        try:
            km = self.kernel_manager.get_kernel(kernel_id)
        except Exception as exc:  # noqa: BLE001 - KeyError, or jupyter_server's HTTPError(404)
            log.info("no kernel %.80r: %s", kernel_id, str(exc)[:200])
            return None
        try:
            # Its own Session (same key): a Session shared with the server's clients would reject
            # the IOPub messages both receive as replays ("Duplicate Signature").
            client = AsyncKernelClient()
            client.load_connection_info(km.get_connection_info(session=False))
            return await KernelLink.connect(client, timeout_s=self.connect_timeout_s, use_subshell=self.use_subshell)
        except Exception as exc:  # noqa: BLE001
            log.info("no specgen link to kernel %.80s: %s", kernel_id, str(exc)[:300])
            return None

    async def get_specs(self, kernel_id: str, *, names: Sequence[str] = (), code: str = "", budget_ms: int = 50,
                        max_rows: int = 3) -> Optional[SpecsReply]:
        link = await self.link(kernel_id)
        return None if link is None else await link.specs(names=names, code=code, budget_ms=budget_ms,
                                                            max_rows=max_rows)

    async def validate(self, kernel_id: str, candidates: Sequence[str], *, prefix: str = "", suffix: str = "",
                       timeout_ms: int = 2000, memory_mb: int = 1024, wait_ms: int = 1000,
                       notebook: Sequence[str] = ()) -> list[Verdict]:
        link = await self.link(kernel_id)
        if link is None:
            return _not_validated(candidates, "not validated: the kernel cannot be reached")
        return await link.validate(candidates, prefix=prefix, suffix=suffix, timeout_ms=timeout_ms,
                                   memory_mb=memory_mb, wait_ms=wait_ms, notebook=notebook)

    async def execution_log(self, kernel_id: str, *, limit: int = 50) -> Optional[LogReply]:
        link = await self.link(kernel_id)
        return None if link is None else await link.execution_log(limit=limit)

    async def cursor(self, kernel_id: str, before: str, after: str = "", *, notebook: Sequence[str] = (),
                     budget_ms: int = 60, max_names: int = 4000) -> Optional[CursorReply]:
        """``KernelLink.cursor`` of the kernel's link; ``None`` when it cannot be reached."""
        link = await self.link(kernel_id)
        return None if link is None else await link.cursor(before, after, notebook=notebook, budget_ms=budget_ms,
                                                            max_names=max_names)

    async def sweep(self) -> None:
        """Forget the links of kernels the manager no longer has (shut down without us being told)."""
        for kernel_id in [k for k in self._links if k not in self.kernel_manager]:
            await self.forget(kernel_id)
        for kernel_id in [k for k in self._failed if k not in self.kernel_manager]:
            self._failed.pop(kernel_id, None)

    async def forget(self, kernel_id: str) -> None:
        """Drop the link of a kernel that is shut down."""
        link = self._links.pop(kernel_id, None)
        self._failed.pop(kernel_id, None)
        if link is not None:
            await link.close()

    async def close(self) -> None:
        for kernel_id in list(self._links):
            await self.forget(kernel_id)
