"""HTTP and websocket handlers of the server extension.

``/specgen/ws``: one websocket per browser tab, speaking ``jupyter_specgen.protocol``.
Authenticated by Jupyter's own auth; each ``complete`` runs as a task, and a newer ``complete``
for the same cell, a ``cancel``, or the tab closing cancels it (JupyterLab gives providers no
abort signal, so the request numbers are how stale work is told apart and dropped). A
``model_download`` (the user clicked the status bar's offer) is relayed to the backend as it is, its
progress frames and final answer relayed back under the tab's request id; ``cancel`` or closing the tab
stops it (what came is kept for the next one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .backend_client import BackendError
from .completions.pipeline import accepted_before, complete
from .protocol import Cancel, Complete, ModelDownload, ProtocolError, decode, encode, error_reply
from specgen_backend.codec import valid_id
from specgen_backend.protocol import ModelDownload as BackendModelDownload
from .users import specgen_user

__all__ = ["CompletionsWebSocket"]

AUTH_RESOURCE = "specgen"

# The id of a frame too large (or too broken) to decode, read from its start: the labextension
# writes ``type``, ``version`` and ``id`` first, so the error can still finish the request.
_ID_PREFIX = re.compile(r'"id"\s*:\s*(-?\d{1,16})\s*[,}]')
_PREFIX_CHARS = 4096


class CompletionsWebSocket(WebSocketMixin, WebSocketHandler, JupyterHandler):
    auth_resource = AUTH_RESOURCE

    def set_default_headers(self):
        """Websockets take none of JupyterHandler's default HTTP headers."""

    @property
    def service(self):
        return self.settings["specgen"]

    @ws_authenticated
    async def get(self, *args, **kwargs):
        user = self.current_user
        if not await ensure_async(self.authorizer.is_authorized(self, user, "execute", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        self.specgen_user = specgen_user(self)  # whose adapters complete here, and whose job steps it sees
        self._tasks: dict[int, asyncio.Task] = {}  # request id -> running completion
        self._by_cell: dict[str, int] = {}  # cell id -> newest request id
        # Requests given their final answer. A task cancelled before it first ran (a ``cancel`` or a
        # newer ``complete`` in the same websocket read) never reaches its own ``except``: its done
        # callback answers it instead, once.
        self._answered: set[int] = set()
        await super().get(*args, **kwargs)

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)
        # Frames are small and each one matters now (progress, then the ghost text a few ms
        # later). Without TCP_NODELAY the second waits for the ACK of the first: Nagle's
        # algorithm against the peer's delayed ACK held every request's frames ~40 ms.
        self.set_nodelay(True)
        self.service.ensure_started()
        self.service.subscribe(self)
        self.send(self.service.browser_status())

    def on_close(self):
        self.service.unsubscribe(self)
        for task in list(getattr(self, "_tasks", {}).values()):
            task.cancel()

    def on_message(self, raw: Any):
        try:
            message = decode(raw)
        except ProtocolError as exc:
            reply_to = exc.reply_to if exc.reply_to is not None else _raw_id(raw)
            self.send(error_reply(reply_to, exc.error_type, exc.message))
            return
        if isinstance(message, Complete):
            if message.id in self._tasks:
                self.send(error_reply(message.id, "malformed", f"request id {message.id} is already running"))
                return
            stale = self._by_cell.get(message.cell_id)
            if stale is not None and stale in self._tasks:
                self._tasks[stale].cancel()
            self._by_cell[message.cell_id] = message.id
            task = asyncio.create_task(self._complete(message))
            self._tasks[message.id] = task
            self._answered.discard(message.id)
            task.add_done_callback(lambda t, key=message.id: self._task_done(key, t))
        elif isinstance(message, ModelDownload):
            if message.id in self._tasks:
                self.send(error_reply(message.id, "malformed", f"request id {message.id} is already running"))
                return
            task = asyncio.create_task(self._download(message))
            self._tasks[message.id] = task
            self._answered.discard(message.id)
            task.add_done_callback(lambda t, key=message.id: self._task_done(key, t))
        elif isinstance(message, Cancel):
            task = self._tasks.get(message.id)
            if task is not None:
                task.cancel()
        else:
            # Not a request: its ``reply_to`` names a request of the tab's that must not get a second final.
            self.send(error_reply(None, "unknown_type", f"{message.type!r} is sent by the server, not to it"))

    def _task_done(self, request_id: int, task: asyncio.Task) -> None:
        self._tasks.pop(request_id, None)
        if request_id not in self._answered:  # cancelled before it ran, or ended without an answer
            self._final(error_reply(request_id, "cancelled", "superseded or cancelled"))
        self._answered.discard(request_id)

    def _final(self, message) -> None:
        """Send the final answer of ``message.reply_to``, unless it already had one."""
        if message.reply_to in self._answered:
            return
        self._answered.add(message.reply_to)
        self.send(message)

    async def _complete(self, request: Complete) -> None:
        try:
            done = await complete(
                request,
                user=self.specgen_user,
                client=self.service.client,
                kernels=self.service.kernels,
                settings=self.service.completion_settings,
                send=self.send,
                accepted=accepted_before(self.service.personalize.feedback, self.specgen_user, request.path),
            )
            self._final(done)
        except asyncio.CancelledError:
            self._final(error_reply(request.id, "cancelled", "superseded or cancelled"))
        except BackendError as exc:
            self._final(error_reply(request.id, exc.error_type, exc.message))
        except Exception as exc:
            self.log.exception("completion %s failed", request.id)
            self._final(error_reply(request.id, "internal", f"completion failed: {str(exc)[:300]}"))

    async def _download(self, request: ModelDownload) -> None:
        """Relay a model_download to the backend: its progress and its final answer, under the tab's id."""
        offer = self.service.client.state.offer
        model = request.model or (offer.model if offer is not None else "")
        if not model:
            self._final(error_reply(request.id, "bad_request", "no model is offered for download: the model in use "
                                    f"({self.service.client.state.model}) is already the best one found for this device"))
            return
        self.log.info("user %s asked to download %s", self.specgen_user, model)
        try:
            done = await self.service.client.request(
                lambda backend_id: BackendModelDownload(id=backend_id, model=model), timeout_s=None,
                on_progress=lambda p: self.send(dataclasses.replace(p, reply_to=request.id)))
            self._final(dataclasses.replace(done, reply_to=request.id))
        except asyncio.CancelledError:
            self._final(error_reply(request.id, "cancelled", f"download of {model} cancelled; what came is kept and "
                                    "the next download goes on from there"))
        except BackendError as exc:
            self._final(error_reply(request.id, exc.error_type, exc.message))

    def send(self, message) -> None:
        """Send a protocol message; a tab that went away is not an error."""
        try:
            self.write_message(encode(message))
        except WebSocketClosedError:
            pass


def _raw_id(raw: Any) -> Any:
    """The request id at the start of a frame that could not be decoded, else ``None``."""
    head = raw[:_PREFIX_CHARS]
    if isinstance(head, bytes):
        head = head.decode("utf-8", "replace")
    match = _ID_PREFIX.search(head)
    if match is None:
        return None
    ident = int(match.group(1))
    return ident if valid_id(ident) else None
