"""Talking to a ``vllm serve`` server over HTTP, and starting one.

Plain ``http.client``, one connection per call: a completion stream is a response read line by
line in its own thread, and closing its socket is how a request is aborted (vLLM aborts a request
whose client went away, and frees its KV cache). Nothing here knows about users or jobs.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlparse

__all__ = ["SYNTAX_ARG", "SYNTAX_PROCESSOR", "VllmUnavailable", "VllmRefused", "VllmClient", "VllmServer", "VllmServerConfig",
           "vllm_python"]

log = logging.getLogger(__name__)

INSTALL_HELP = (
    "run `bash scripts/vllm_env.sh` (vLLM's CPU build in its own virtual environment), or on a GPU host "
    "install `jupyter-specgen[vllm]` into a virtual environment and set SPECGEN_VLLM_PYTHON to its python; "
    "or start `vllm serve` yourself and pass --vllm-url"
)


class VllmUnavailable(RuntimeError):
    """The vLLM server cannot be reached (not started, killed, restarting)."""


class VllmRefused(RuntimeError):
    """The vLLM server answered a request with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"vLLM answered {status}: {message}")
        self.status, self.message = status, message


class VllmClient:
    """Calls to one vLLM server at ``url`` (``http://host:port``)."""

    def __init__(self, url: str, *, timeout: float = 60.0):
        parsed = urlparse(url)
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise ValueError(f"the vLLM url must look like http://HOST:PORT, not {url!r}")
        self.url = f"http://{parsed.hostname}:{parsed.port}"
        self._host, self._port, self._timeout = parsed.hostname, parsed.port, timeout

    def down_message(self, exc: BaseException) -> str:
        return f"the vLLM server at {self.url} does not answer ({exc.__class__.__name__}: {exc})"

    def _request(self, method: str, path: str, body: Any = None, *, timeout: Optional[float] = None):
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout or self._timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise VllmUnavailable(self.down_message(exc)) from exc

    def call(self, method: str, path: str, body: Any = None, *, timeout: Optional[float] = None) -> bytes:
        """The body of a 2xx answer; ``VllmRefused`` for other statuses, ``VllmUnavailable`` when down."""
        conn, response = self._request(method, path, body, timeout=timeout)
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise VllmUnavailable(self.down_message(exc)) from exc
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise VllmRefused(response.status, _error_message(data))
        return data

    def healthy(self) -> bool:
        try:
            self.call("GET", "/health", timeout=5)
            return True
        except (VllmUnavailable, VllmRefused):
            return False

    def models(self) -> list[str]:
        """Ids the server serves: the base model's name, then the LoRA adapters registered."""
        return [m["id"] for m in json.loads(self.call("GET", "/v1/models"))["data"]]

    def metrics(self) -> dict[str, float]:
        """vLLM's Prometheus metrics, each summed over its labels (``vllm:num_requests_running``...)."""
        out: dict[str, float] = {}
        for line in self.call("GET", "/metrics").decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                continue
        return out

    def stream(self, path: str, body: Any) -> "CompletionStream":
        """Open a streamed completion; iterate the stream for its chunks, ``close`` it to abort."""
        conn, response = self._request("POST", path, body)
        if response.status != 200:
            try:
                data = response.read()
            except (OSError, http.client.HTTPException):
                data = b""
            conn.close()
            raise VllmRefused(response.status, _error_message(data))
        return CompletionStream(self, conn, response)


class CompletionStream:
    """The server-sent events of one completion request."""

    def __init__(self, client: VllmClient, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._client, self._conn, self._response = client, conn, response
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[dict]:
        try:
            while True:
                line = self._response.readline()
                if not line:
                    if self._closed.is_set():
                        return
                    raise VllmUnavailable(self._client.down_message(ConnectionError("the stream ended before [DONE]")))
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                chunk = json.loads(data)
                if "choices" not in chunk:  # an error reported inside the stream
                    raise VllmRefused(500, _error_message(data))
                yield chunk
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if self._closed.is_set():
                return
            raise VllmUnavailable(self._client.down_message(exc)) from exc

    def close(self) -> None:
        """Abort: the server sees the client go and aborts the request (safe from any thread, twice)."""
        if self._closed.is_set():
            return
        self._closed.set()
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in readline
            except OSError:
                pass
        self._conn.close()


def _error_message(data: bytes) -> str:
    try:
        obj = json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")[:500]
    error = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:500]
    return str(error)[:500]


# -- the server process ---------------------------------------------------------------------------


def vllm_python() -> str:
    """The python of the environment vLLM is installed in: $SPECGEN_VLLM_PYTHON, else the one
    ``scripts/vllm_env.sh`` builds. vLLM pins older transformers than ours, so it never lives in
    this environment."""
    configured = os.environ.get("SPECGEN_VLLM_PYTHON")
    if configured:
        return configured
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = Path(os.environ.get("SPECGEN_VLLM_VENV") or cache / "jupyter-specgen" / "vllm-venv")
    python = venv / "bin" / "python"
    if not python.exists():
        raise VllmUnavailable(f"vLLM is not installed for this backend (no {python}): {INSTALL_HELP}")
    return str(python)


# LoRA ranks vLLM accepts for --max-lora-rank.
_VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class VllmServerConfig:
    model: str  # local folder (or hub id on a host that can download) of the base model
    port: int  # where it listens, on loopback
    python: str = ""  # "": ``vllm_python()``
    max_loras: int = 8  # adapters in one batch (vLLM's --max-loras); more stay cached on the CPU
    max_lora_rank: int = 64  # rounded up to a rank vLLM accepts
    max_model_len: int = 2048  # prompt + completion tokens of one request
    dtype: str = "auto"  # "float32" for results equal to the native engine's fp32
    # CPU build only: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE); a GPU host sizes it from memory.
    cpu_kvcache_gib: int = 1
    extra_args: tuple[str, ...] = ()  # e.g. ("--tensor-parallel-size", "2") on a multi-GPU host
    log_path: Optional[str] = None  # where its output goes (None: this process's stderr)


# The logits processor that holds vLLM's sequences to the native engine's syntax masks.
SYNTAX_PROCESSOR = "specgen_backend.engines.vllm_syntax:SyntaxLogitsProcessor"
# The extra argument (``vllm_xargs``) of a request that asks it for them: the text before the cursor.
SYNTAX_ARG = "specgen_syntax"


class VllmServer:
    """A ``vllm serve`` child process (``--enable-lora``, runtime adapter loading on, the syntax
    masks' logits processor loaded)."""

    def __init__(self, config: VllmServerConfig):
        self.config = config
        self.url = f"http://127.0.0.1:{config.port}"
        self.process: Optional[subprocess.Popen] = None
        self._log = None
        self._path: Optional[tempfile.TemporaryDirectory] = None

    def command(self) -> list[str]:
        c = self.config
        rank = next((r for r in _VLLM_RANKS if r >= c.max_lora_rank), _VLLM_RANKS[-1])
        return [
            c.python or vllm_python(), "-m", "vllm.entrypoints.openai.api_server",
            "--model", c.model, "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(c.port),
            "--enable-lora", "--max-loras", str(max(1, c.max_loras)), "--max-lora-rank", str(rank),
            "--max-model-len", str(c.max_model_len), "--dtype", c.dtype,
            "--logits-processors", SYNTAX_PROCESSOR, *c.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        env = dict(os.environ)
        # /v1/load_lora_adapter and /v1/unload_lora_adapter exist only with this set.
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.config.cpu_kvcache_gib))
        # The backend's own environment (transformers 5.24) must not leak into vLLM's: vLLM's path
        # gets a folder that holds this package alone, for the syntax masks' logits processor.
        if self._path is None:
            self._path = tempfile.TemporaryDirectory(prefix="specgen-vllm-path-")
            package = Path(__file__).resolve().parent.parent
            (Path(self._path.name) / package.name).symlink_to(package, target_is_directory=True)
        env["PYTHONPATH"] = self._path.name
        out = sys.stderr
        if self.config.log_path:
            if self._log is None:  # a restart appends to the same log
                self._log = open(self.config.log_path, "ab")
            out = self._log
        log.info("starting vLLM: %s", " ".join(self.command()))
        self.process = subprocess.Popen(self.command(), env=env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip

    def wait_ready(self, timeout: float) -> None:
        """Block until /health answers; ``VllmUnavailable`` if the process exits or time runs out."""
        client = VllmClient(self.url)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process is not None and self.process.poll() is not None:
                raise VllmUnavailable(f"vLLM exited with status {self.process.returncode} while starting; "
                                      f"see {self.config.log_path or 'the log'}")  # fmt: skip
            if client.healthy():
                return
            time.sleep(1.0)
        raise VllmUnavailable(f"vLLM did not answer {self.url}/health within {timeout:.0f} s")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._path is not None:
            self._path.cleanup()
            self._path = None
