"""Run the model backend as a child process of the Jupyter server, and keep it running.

The child is ``python -m specgen_backend serve`` on loopback, port 0, with a random token in
its environment; it reports its URL as one JSON line on stdout. If it dies it is started again
(with a growing pause, so a backend that cannot start does not spin), and it is stopped with
the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
from typing import Callable, Optional

__all__ = ["BackendProcess"]

log = logging.getLogger(__name__)

LISTEN_TIMEOUT_S = 120.0  # importing torch and transformers on a cold, slow disk can take a while


class BackendProcess:
    """A supervised ``specgen-backend serve`` child."""

    def __init__(
        self,
        *,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        on_exit: Optional[Callable[[str], None]] = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.token = secrets.token_urlsafe(32)
        self.on_exit = on_exit  # told why the child stopped, so clients can be answered
        self.extra_args = extra_args
        self.url: Optional[str] = None
        self.process: Optional[asyncio.subprocess.Process] = None
        self._listening = asyncio.Event()
        self._stopping = False
        self._task: Optional[asyncio.Task] = None
        self.last_error = ""

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def wait_listening(self, timeout: float) -> str:
        """The child's URL once it listens; raise ``TimeoutError`` if not within ``timeout``."""
        await asyncio.wait_for(self._listening.wait(), timeout)
        assert self.url is not None
        return self.url

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        proc = self.process
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                log.warning("backend pid %s ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                await proc.wait()

    async def _supervise(self) -> None:
        pause = 1.0
        while not self._stopping:
            started = asyncio.get_running_loop().time()
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"the backend could not be started: {exc!r}"
                log.exception("backend process failed")
            if self._stopping:
                return
            if asyncio.get_running_loop().time() - started > 60:
                pause = 1.0  # it ran for a while: a crash, not a start-up failure
            log.warning("backend stopped (%s); restarting in %.0f s", self.last_error, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    async def _run_once(self) -> None:
        self._listening.clear()
        self.url = None
        env = {**os.environ, "SPECGEN_BACKEND_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        args = [
            sys.executable, "-m", "specgen_backend", "serve",
            "--model", self.model, "--host", "127.0.0.1", "--port", "0",
            "--device", self.device, "--dtype", self.dtype, *self.extra_args,
        ]  # fmt: skip
        self.process = proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
        )
        log.info("started backend pid %s for model %s", proc.pid, self.model)
        drain = None
        try:
            assert proc.stdout is not None
            self.url = await asyncio.wait_for(_listening_url(proc.stdout, proc.pid), LISTEN_TIMEOUT_S)
            if self.url:
                self._listening.set()
                log.info("backend pid %s listening at %s", proc.pid, self.url)
                # Anything a library prints later must not fill the pipe and block the child.
                drain = asyncio.create_task(_forward(proc.stdout, proc.pid))
            code = await proc.wait()
        except asyncio.TimeoutError:
            log.error("backend pid %s did not report listening within %.0f s", proc.pid, LISTEN_TIMEOUT_S)
        finally:
            self._listening.clear()
            if proc.returncode is None:  # timed out, or this task was cancelled: never leave it behind
                proc.kill()
            code = await proc.wait()
            if drain is not None:
                await drain
        self.last_error = f"backend process exited with code {code}"
        if self.on_exit is not None and not self._stopping:
            self.on_exit(self.last_error)


async def _listening_url(stream: asyncio.StreamReader, pid: int) -> str:
    """The URL of the child's ``{"event": "listening"}`` line ("" if it exits first)."""
    while line := await stream.readline():
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and event.get("event") == "listening":
            return str(event["url"])
        log.info("backend pid %s: %s", pid, line.decode(errors="replace").rstrip())
    return ""


async def _forward(stream: asyncio.StreamReader, pid: int) -> None:
    """Log what the child writes to stdout after its start-up line, until it exits."""
    while line := await stream.readline():
        log.info("backend pid %s: %s", pid, line.decode(errors="replace").rstrip())
