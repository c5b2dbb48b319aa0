"""One websocket connection from the Jupyter server to the model backend, shared by all tabs.

Requests from every browser tab are multiplexed over it, each under a backend-side id of its
own. The connection is kept up: when it drops (the backend was killed, restarted, or is
unreachable) every request in flight is answered with ``backend_unavailable`` and the client
connects again. Steps of personalize jobs that the backend pushes (``job`` frames without
``reply_to``) go to ``on_job``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

from specgen_backend import protocol
from specgen_backend.protocol import (
    Cancel, Candidate, CandidateEnd, CompletionContext, Constraint, DownloadProgress, Error, Generate, Job, JobState,
    ModelOffer, Result, Status, Token,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

__all__ = ["BackendError", "BackendState", "BackendClient"]

log = logging.getLogger(__name__)

# A generation of which nothing is heard for this long is failed as "not responding": below the
# 15 s after which the browser's inline completer gives up on a provider, so the tab is told why
# instead of waiting. Counted from the last frame of the request, so a long stream is not cut.
GENERATE_TIMEOUT_S = 13.0
# The connection is pinged this often; no pong within PONG_TIMEOUT_S means the backend is hung
# (stopped, or its event loop blocked): the status says so and requests in flight are failed.
PING_INTERVAL_S = 2.0
PONG_TIMEOUT_S = 6.0  # generous: a loaded machine may answer late, and a false alarm fails requests
NOT_RESPONDING = ("the model backend is not responding (stopped or stuck); requests fail until it answers "
                  "again, or it is restarted")


class BackendError(Exception):
    """A request the backend (or the way to it) could not serve."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True)
class BackendState:
    """What the status bar shows: starting / ready / error, with the model and the reason."""

    state: str = "starting"
    model: str = ""
    device: str = ""
    message: str = ""
    reason: str = ""  # why this model serves
    offer: Optional[ModelOffer] = None  # a better model worth downloading


@dataclass
class _Pending:
    on_token: Optional[Callable[[int, str], None]] = None
    on_progress: Optional[Callable[[DownloadProgress], None]] = None  # a model_download's progress frames
    on_candidate: Optional[Callable[[int, Candidate], None]] = None
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    heard: float = field(default_factory=time.monotonic)  # when the backend last sent a frame of this request


Locate = Callable[[], Awaitable[tuple[str, str]]]  # -> (url, token)


class BackendClient:
    def __init__(self, locate: Locate, *, model: str, on_state: Callable[[BackendState], None],
                 on_job: Optional[Callable[[JobState], None]] = None):
        self._locate = locate  # waits until the backend is reachable, then gives (url, token)
        self._on_state = on_state
        self._on_job = on_job
        self.state = BackendState(state="starting", model=model, message="starting the model backend")
        self._ws: Optional[ClientConnection] = None
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._task: Optional[asyncio.Task] = None
        self._closing = False
        self.generate_timeout_s = GENERATE_TIMEOUT_S
        self._responsive_state: Optional[BackendState] = None  # the state to restore when pongs return

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending("backend_unavailable", "the Jupyter server is shutting down")

    def set_state(self, state: BackendState) -> None:
        if state != self.state:
            self.state = state
            self._on_state(state)

    async def generate(
        self,
        *,
        user: str,
        context: CompletionContext,
        n: int,
        max_tokens: int,
        temperature: float,
        on_token: Callable[[int, str], None],
        adapters: tuple[str, ...] = (),
        personal: bool = False,
        constraint: Optional[Constraint] = None,
        on_candidate: Optional[Callable[[int, Candidate], None]] = None,
    ) -> Result:
        """Run one generation; ``on_token`` sees the streamed deltas. Raises ``BackendError``.

        ``constraint``: what the identifier at the cursor may be (from the live kernel); None: free.
        ``on_candidate(index, candidate)``: called for each candidate as soon as it is complete,
        before the result (which carries the same candidates), so validation can start early.

        Cancelling the awaiting task cancels the backend request too.
        """
        ws = self._ws
        if ws is None or self.state.state != "ready":
            raise BackendError("backend_unavailable", f"the model backend is not ready ({self.state.state}: {self.state.message})")
        request_id = f"r{next(self._ids)}"
        request = Generate(
            id=request_id, user=user, context=context, n=n, max_tokens=max_tokens,
            temperature=temperature, adapters=list(adapters), personal=personal, constraint=constraint,
        )  # fmt: skip
        pending = self._pending[request_id] = _Pending(on_token=on_token, on_candidate=on_candidate)
        try:
            await ws.send(protocol.encode(request))
            return await self._answer(pending)
        except asyncio.TimeoutError:
            try:
                await asyncio.wait_for(ws.send(protocol.encode(Cancel(id=request_id))), 1.0)
            except (ConnectionClosed, asyncio.TimeoutError):
                pass
            raise BackendError("backend_unavailable", f"the model backend is not responding: no answer within "
                               f"{self.generate_timeout_s:.0f} s") from None
        except asyncio.CancelledError:
            await _cancel_quietly(ws, request_id)
            raise
        except ConnectionClosed:
            raise BackendError("backend_unavailable", "the connection to the model backend was lost") from None
        finally:
            self._pending.pop(request_id, None)

    async def request(self, build: Callable[[str], object], *, timeout_s: Optional[float] = 60.0,
                      on_progress: Optional[Callable[[DownloadProgress], None]] = None):
        """Send the request ``build(id)`` (anything but ``generate``) and return its final answer.

        Raises ``BackendError`` for an ``error`` answer, a lost connection or no answer in time
        (``timeout_s=None``: none). ``on_progress`` sees the ``download_progress`` frames before it;
        cancelling the awaiting task cancels the backend request too.
        """
        ws = self._ws
        if ws is None:
            raise BackendError("backend_unavailable", f"the model backend is not reachable ({self.state.state}: {self.state.message})")
        request_id = f"r{next(self._ids)}"
        pending = self._pending[request_id] = _Pending(on_progress=on_progress)
        try:
            await ws.send(protocol.encode(build(request_id)))
            return await asyncio.wait_for(pending.future, timeout_s)
        except asyncio.CancelledError:
            await _cancel_quietly(ws, request_id)
            raise
        except asyncio.TimeoutError:
            raise BackendError("backend_unavailable", f"the model backend did not answer within {timeout_s:.0f} s") from None
        except ConnectionClosed:
            raise BackendError("backend_unavailable", "the connection to the model backend was lost") from None
        finally:
            self._pending.pop(request_id, None)

    # -- the connection loop ---------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            try:
                url, token = await self._locate()
                async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
                    self._ws = ws
                    watchdog = asyncio.create_task(self._watch(ws))
                    try:
                        await self._read(ws)
                    finally:
                        watchdog.cancel()
                        self._responsive_state = None
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                status = exc.response.status_code
                reason = (
                    "the model backend refused this server's token; check SpecgenExtension.backend_token or backend_token_file"
                    if status in (401, 403)
                    else f"the model backend answered HTTP {status} instead of opening a websocket"
                )
                log.error("%s", reason)
                self.set_state(BackendState(state="error", model=self.state.model, message=reason))
                await asyncio.sleep(5)  # a wrong token does not fix itself quickly
            except (OSError, ConnectionClosed, asyncio.TimeoutError) as exc:
                log.warning("connection to the model backend failed: %r", exc)
            except Exception:
                log.exception("connection to the model backend failed")
            finally:
                self._ws = None
            if self._closing:
                return
            self._fail_pending("backend_unavailable", "the model backend stopped; it is being restarted")
            if self.state.state != "error":
                self.set_state(BackendState(state="starting", model=self.state.model, message="reconnecting to the model backend"))
            await asyncio.sleep(0.5)

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                message = protocol.decode(raw, limit=1 << 30)
            except protocol.ProtocolError as exc:
                log.error("unreadable frame from the backend: %s", exc.message)
                continue
            if isinstance(message, Status):
                state = {"loading": "starting", "ready": "ready", "error": "error"}[message.state]
                text = message.message or ("loading the model" if state == "starting" else "")
                self.set_state(BackendState(state=state, model=message.model, device=message.device, message=text,
                                            reason=message.reason, offer=message.offer))
                continue
            if isinstance(message, Job) and message.reply_to is None:
                if self._on_job is not None and message.job is not None:
                    try:
                        self._on_job(message.job)
                    except Exception:
                        log.exception("handling a personalize job step failed")
                continue
            pending = self._pending.get(str(getattr(message, "reply_to", "")))
            if pending is None:
                continue  # an answer to a request already given up on
            pending.heard = time.monotonic()
            if isinstance(message, Token):
                if pending.on_token is not None:
                    pending.on_token(message.candidate, message.text)
            elif isinstance(message, CandidateEnd):
                if pending.on_candidate is not None:
                    try:
                        pending.on_candidate(message.index, message.candidate)
                    except Exception:  # the caller's bug must not end the connection shared by every tab
                        log.exception("handling candidate %d of %s failed", message.index, message.reply_to)
            elif isinstance(message, DownloadProgress):
                if pending.on_progress is not None:
                    try:
                        pending.on_progress(message)
                    except Exception:  # the caller's bug must not end the connection shared by every tab
                        log.exception("handling download progress of %s failed", message.reply_to)
            elif isinstance(message, Error):
                if not pending.future.done():
                    pending.future.set_exception(BackendError(message.error.type, message.error.message))
            elif not pending.future.done():
                pending.future.set_result(message)  # result, job, versions, adapters: the final answer

    async def _answer(self, pending: _Pending):
        """The final answer of ``pending``; ``TimeoutError`` once nothing was heard of it for
        ``generate_timeout_s``."""
        while True:
            left = pending.heard + self.generate_timeout_s - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError
            try:
                return await asyncio.wait_for(asyncio.shield(pending.future), left)
            except asyncio.TimeoutError:
                continue  # a frame may have come meanwhile: the loop checks ``heard`` again

    async def _watch(self, ws: ClientConnection) -> None:
        """Ping the backend; while it does not answer, say so in the status and fail what waits on it."""
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            try:
                pong = await ws.ping()
                await asyncio.wait_for(pong, PONG_TIMEOUT_S)
            except asyncio.TimeoutError:
                if self._responsive_state is None:
                    log.warning("%s", NOT_RESPONDING)
                    self._responsive_state = self.state
                    self.set_state(BackendState(state="error", model=self.state.model, device=self.state.device,
                                                message=NOT_RESPONDING))
                    self._fail_pending("backend_unavailable", NOT_RESPONDING)
                continue
            except ConnectionClosed:
                return
            if self._responsive_state is not None:
                log.info("the model backend answers again")
                restored, self._responsive_state = self._responsive_state, None
                if self.state.message == NOT_RESPONDING:  # no newer status came meanwhile
                    self.set_state(restored)

    def _fail_pending(self, error_type: str, message: str) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(BackendError(error_type, message))


async def _cancel_quietly(ws, request_id: str) -> None:
    """Tell the backend to stop ``request_id`` (its caller went away); a closed connection stopped it already."""
    try:
        await ws.send(protocol.encode(Cancel(id=request_id)))
    except ConnectionClosed:
        pass
