"""HTTP and websocket handlers of the server extension.

``/specgen/ws``: one websocket per browser tab, speaking ``jupyter_specgen.protocol``.
Authenticated by Jupyter's own auth; each ``complete`` runs as a task, and a newer ``complete``
for the same cell, a ``cancel``, or the tab closing cancels it (JupyterLab gives providers no
abort signal, so the request numbers are how stale work is told apart and dropped).
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .backend_client import BackendError
from .completions.pipeline import accepted_before, complete
from .protocol import Cancel, Complete, ProtocolError, decode, encode, error_reply
from .users import specgen_user

__all__ = ["CompletionsWebSocket"]

AUTH_RESOURCE = "specgen"


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
        await super().get(*args, **kwargs)

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)
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
            self.send(error_reply(exc.reply_to, exc.error_type, exc.message))
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
            task.add_done_callback(lambda _t, key=message.id: self._tasks.pop(key, None))
        elif isinstance(message, Cancel):
            task = self._tasks.get(message.id)
            if task is not None:
                task.cancel()
        else:
            self.send(error_reply(getattr(message, "reply_to", None), "unknown_type", f"{message.type!r} is sent by the server, not to it"))

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
            self.send(done)
        except asyncio.CancelledError:
            self.send(error_reply(request.id, "cancelled", "superseded or cancelled"))
        except BackendError as exc:
            self.send(error_reply(request.id, exc.error_type, exc.message))
        except Exception as exc:
            self.log.exception("completion %s failed", request.id)
            self.send(error_reply(request.id, "internal", f"completion failed: {exc!r}"))

    def send(self, message) -> None:
        """Send a protocol message; a tab that went away is not an error."""
        try:
            self.write_message(encode(message))
        except WebSocketClosedError:
            pass


