"""The backend's websocket server: authenticates clients, decodes frames, runs generation.

One connection per Jupyter server (or per test client). Each ``generate`` runs as a task that
hands the model work to a single worker thread (the model serves one request at a time in this
version; requests queue in arrival order, bounded) and streams ``token`` frames back. Every
request ends with exactly one ``result`` or ``error``; a closed connection cancels what it had
asked for.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from . import protocol
from .engine import Engine, EngineConfig
from .loading import LoadedModel, ModelUnavailable, load_model
from .protocol import Cancel, Generate, ProtocolError, Result, Status, StatusRequest, Token, encode, error_reply

__all__ = ["BackendConfig", "Backend"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendConfig:
    model: str  # hub id or local folder
    token: str  # shared secret every client must present
    host: str = "127.0.0.1"  # loopback unless the operator opens it up
    port: int = 0  # 0: pick a free port (reported by ``Backend.url``)
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # auto: bf16 on cuda, fp32 on cpu
    max_queue: int = 64  # requests waiting for the model before ``overloaded`` is answered
    max_message_bytes: int = protocol.MAX_MESSAGE_BYTES
    engine: EngineConfig = EngineConfig()


class Backend:
    """The model and the websocket server in front of it."""

    def __init__(self, config: BackendConfig, *, loaded: Optional[LoadedModel] = None):
        self.config = config
        self._loaded = loaded
        self._engine: Optional[Engine] = Engine(loaded, config.engine) if loaded else None
        self._state = "ready" if loaded else "loading"
        self._message = ""
        self._device = loaded.device if loaded else ""
        # One worker: the model is not re-entrant, and a queue in front of it keeps order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specgen-model")
        self._waiting = 0
        self._connections: set[ServerConnection] = set()
        self._server: Optional[Server] = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # Frames up to 4x the protocol limit reach ``protocol.decode``, which answers
        # ``too_large``; only beyond that does the websocket layer close the connection.
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=4 * self.config.max_message_bytes,
        )
        if self._engine is None:
            asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = list(self._server.sockets)[0].getsockname()[:2]
        return f"ws://{host}:{port}"

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> None:
        try:
            loaded = load_model(self.config.model, device=self.config.device, dtype=self.config.dtype)
            engine = Engine(loaded, self.config.engine)
        except ModelUnavailable as exc:
            log.error("%s", exc)
            self._set_state("error", str(exc))
            return
        except Exception as exc:  # a broken model folder, a bug: report it, keep serving status
            log.exception("loading the model %s failed", self.config.model)
            self._set_state("error", f"loading the model {self.config.model!r} failed: {exc!r}")
            return
        self._loaded, self._engine, self._device = loaded, engine, loaded.device
        self._set_state("ready", "")

    def _set_state(self, state: str, message: str) -> None:
        """Record the state and push it to every client (called from the worker thread)."""
        self._state, self._message = state, message
        frame = encode(self._status(None))
        for ws in list(self._connections):
            asyncio.run_coroutine_threadsafe(_send_quietly(ws, frame), self._loop)

    def _status(self, reply_to: Any) -> Status:
        return Status(reply_to=reply_to, state=self._state, model=self.config.model, device=self._device, message=self._message)  # type: ignore[arg-type]

    # -- connections -----------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request) -> Any:
        """Refuse the websocket upgrade without the shared token; answer /health over HTTP."""
        url = urlparse(request.path)
        if url.path == "/health":
            return connection.respond(HTTPStatus.OK, f"{self._state}\n")
        header = request.headers.get("Authorization", "")
        offered = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        offered = offered or parse_qs(url.query).get("token", [""])[0]
        if not hmac.compare_digest(offered.encode(), self.config.token.encode()):
            log.warning("refused a connection from %s: missing or wrong token", connection.remote_address)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid token is required (Authorization: Bearer <token>)\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self._loop = asyncio.get_running_loop()
        self._connections.add(ws)
        running: dict[Any, _Running] = {}
        try:
            await ws.send(encode(self._status(None)))
            async for raw in ws:
                await self._dispatch(ws, raw, running)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            self._connections.discard(ws)
            for job in running.values():
                job.cancel.set()
            for job in list(running.values()):
                job.task.cancel()

    async def _dispatch(self, ws: ServerConnection, raw, running: dict) -> None:
        try:
            message = protocol.decode(raw, limit=self.config.max_message_bytes)
        except ProtocolError as exc:
            await ws.send(encode(error_reply(exc.reply_to, exc.error_type, exc.message)))
            return
        if isinstance(message, Generate):
            if message.id in running:
                await ws.send(encode(error_reply(message.id, "malformed", f"request id {message.id!r} is already running")))
                return
            cancel = threading.Event()
            task = asyncio.create_task(self._generate(ws, message, cancel))
            running[message.id] = _Running(task=task, cancel=cancel)
            task.add_done_callback(lambda _t, key=message.id: running.pop(key, None))
        elif isinstance(message, Cancel):
            job = running.get(message.id)
            if job is not None:
                job.cancel.set()  # the generate task answers with ``cancelled``
        elif isinstance(message, StatusRequest):
            await ws.send(encode(self._status(message.id)))
        else:
            await ws.send(encode(error_reply(getattr(message, "reply_to", None), "unknown_type", f"{message.type!r} is sent by the backend, not to it")))

    async def _generate(self, ws: ServerConnection, request: Generate, cancel: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._engine is None:
                reason = self._message if self._state == "error" else "the model is still loading; try again shortly"
                await ws.send(encode(error_reply(request.id, "model_unavailable", reason)))
                return
            if request.adapters:
                await ws.send(encode(error_reply(request.id, "unknown_adapter", f"adapters {request.adapters} are not loaded on this backend")))
                return
            if self._waiting >= self.config.max_queue:
                await ws.send(encode(error_reply(request.id, "overloaded", f"{self._waiting} requests are waiting; try again")))
                return
            outbox: asyncio.Queue = asyncio.Queue()

            def emit(candidate: int, text: str) -> None:
                loop.call_soon_threadsafe(outbox.put_nowait, Token(reply_to=request.id, candidate=candidate, text=text))

            engine = self._engine
            self._waiting += 1
            future = loop.run_in_executor(self._executor, lambda: engine.generate(request, cancelled=cancel.is_set, emit=emit))
            sender = asyncio.create_task(_drain(ws, outbox))
            try:
                candidates = await future
            finally:
                self._waiting -= 1
                outbox.put_nowait(None)
                await sender
            if cancel.is_set():
                await ws.send(encode(error_reply(request.id, "cancelled", "the request was cancelled")))
            else:
                await ws.send(encode(Result(reply_to=request.id, candidates=candidates, model=self.config.model)))
        except ConnectionClosed:
            cancel.set()
        except asyncio.CancelledError:
            cancel.set()
            raise
        except Exception as exc:
            log.exception("generate %r failed", request.id)
            await _send_quietly(ws, encode(error_reply(request.id, "internal", f"generation failed: {exc!r}")))


@dataclass
class _Running:
    task: asyncio.Task
    cancel: threading.Event


async def _drain(ws: ServerConnection, outbox: asyncio.Queue) -> None:
    """Send queued token frames in order until the ``None`` sentinel."""
    while True:
        item = await outbox.get()
        if item is None:
            return
        await _send_quietly(ws, encode(item))


async def _send_quietly(ws: ServerConnection, frame: str) -> None:
    try:
        await ws.send(frame)
    except ConnectionClosed:
        pass
