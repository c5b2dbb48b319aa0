"""The backend's websocket server: authenticates clients, decodes frames, hands work to the scheduler.

One connection per Jupyter server (or per test client); the ``user`` field of each request is
the Jupyter user that server authenticated. ``generate`` requests go to the continuous-batching
scheduler (``scheduler.py``), whose model thread streams ``token`` frames back. Adapter requests
run in the same model thread between decode steps. Personalize jobs run as child processes
(``training/runner.py``) writing to the adapter store under ``adapter_root``; what they publish
(and what a rollback puts back) is hot-loaded under the user's name before the next completion
that asks for the user's adapters (``personal``). A job's steps are pushed to the connections
that started it or asked for its status (a Jupyter server that reconnected gets them again by
asking), never to others. Every request ends with exactly one final
answer; a closed connection cancels what it had asked for. ``/health`` and ``/metrics``
(Prometheus text) are answered over plain HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from . import protocol
from .codec import loads, valid_id
from .engine import Engine, EngineConfig
from .loading import LoadedModel, ModelUnavailable, load_model
from .metrics import Metrics
from .model_choice import Choice, choose_model
from .protocol import (
    AdapterDelete,
    AdapterInfo,
    AdapterLoad,
    AdapterRollback,
    Adapters,
    AdaptersList,
    AdapterVersions,
    Cancel,
    CandidateEnd,
    EvalMetrics,
    Generate,
    Job as JobFrame,
    ModelDownload,
    ModelOffer,
    PersonalizeCancel,
    PersonalizeJudged,
    PersonalizeStart,
    PersonalizeStatus,
    ProtocolError,
    Result,
    Status,
    StatusRequest,
    Token,
    VersionInfo,
    Versions,
    build,
    encode,
    error_reply,
)
from .scheduler import Job, Overloaded, Scheduler, SchedulerConfig

__all__ = ["BackendConfig", "Backend"]

log = logging.getLogger(__name__)


# User names and adapter names: one path component, no dots-only names, no separators. Always
# ``fullmatch``: ``$`` would let a trailing newline through ("alice\n").
_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,127}")
# The start of a ``personalize_start`` frame (its type written first, as clients write it): the one
# message allowed past max_message_bytes, whose other errors are then worth answering as they are.
_UPLOAD_HEAD = re.compile(r'\s*\{\s*"type"\s*:\s*"personalize_start"')
SHARED = "shared"  # owner of the operator's adapters; no user may load or delete under it


@dataclass(frozen=True)
class BackendConfig:
    model: str  # hub id, local folder, or "auto" (model_choice.py: a cached code model, else the embedded one)
    token: str  # shared secret every client must present
    host: str = "127.0.0.1"  # loopback unless the operator opens it up
    port: int = 0  # 0: pick a free port (reported by ``Backend.url``)
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # auto: bf16 on cuda, fp32 on cpu
    max_queue: int = 64  # requests waiting for the model before ``overloaded`` is answered
    max_batch: int = 16  # candidate rows decoded together in one step
    max_adapters: int = 8  # adapters resident in the bank; loading one more evicts the least recently used
    max_rank: int = 64  # largest LoRA rank the bank holds
    adapter_root: Optional[str] = None  # users load adapters from <adapter_root>/<user>/...; None: no loading
    shared_adapters: Optional[str] = None  # folder of PEFT folders published to every user as shared/<name>
    max_message_bytes: int = protocol.MAX_MESSAGE_BYTES
    # ``personalize_start`` carries the user's examples; it alone may be this large.
    max_upload_bytes: int = 32 << 20
    train_device: str = "cpu"  # where personalize jobs train ("cuda" on a GPU host)
    train_steps: int = 0  # optimizer steps of a job whose request says 0 (0: planned from the data)
    judge_timeout_s: float = 300.0  # how long a job waits for the client's executable rates
    engine: EngineConfig = EngineConfig()
    # Prompt KV caches kept for the next keystroke's prefill (see SchedulerConfig); 0 turns it off.
    prefix_cache_mb: int = SchedulerConfig.prefix_cache_bytes >> 20
    # Who generates: "native" (this process: transformers + our batching, fLoRA) or "vllm" (a vLLM
    # server: engines/, docs/serving.md), at ``vllm_url`` or, when None, one this backend starts.
    serving_engine: str = "native"
    vllm_url: Optional[str] = None
    model_dirs: tuple[str, ...] = ()  # folders "auto" looks in besides the Hugging Face cache (<dir>/<model name>)


class Backend:
    """The model, its scheduler and the websocket server in front of them."""

    def __init__(self, config: BackendConfig, *, loaded: Optional[LoadedModel] = None):
        self.config = config
        self.metrics = Metrics()
        self._loaded: Optional[LoadedModel] = None
        self._scheduler: Optional[Scheduler] = None
        self._bank = None
        self._state = "loading"
        self._message = ""
        self._device = ""
        self._preloaded = loaded
        self._choice = _choose(config)  # the model served and why; replaced by a finished model_download
        self._download: Optional[asyncio.Task] = None  # the model_download running (one at a time)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specgen-load")
        # Prompts are built and tokenised here, never in the model thread: the work grows with the
        # notebook and would pause every user's decoding. Two workers: one huge notebook does not
        # hold up another user's prompt, and few threads compete with the model thread for the GIL.
        self._prompts = ThreadPoolExecutor(max_workers=2, thread_name_prefix="specgen-prompt")
        self._connections: set[ServerConnection] = set()
        self._server: Optional[Server] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner = None
        # Why personal adapters are off although an adapter root was given ("" when they are on):
        # shown in every status, so the status bar says which setting to fix instead of the
        # backend exiting at start and being restarted forever.
        self._adapters_off = ""
        if config.adapter_root:
            from .training.runner import JobRunner, RunnerConfig

            try:
                self._runner = JobRunner(
                    RunnerConfig(model=self._choice.model, store_root=config.adapter_root, device=config.train_device,
                                 steps=config.train_steps, judge_timeout_s=config.judge_timeout_s,
                                 fim=config.engine.fim),
                    on_published=self._hot_load)  # fmt: skip
            except OSError as exc:
                self._adapters_off = (
                    f"personal adapters are off: the adapter root {config.adapter_root!r} cannot be created "
                    f"({exc.strerror or exc}); set SpecgenExtension.adapter_root (or specgen-backend --adapter-root) "
                    f"to a folder this user can write")
                log.error("%s", self._adapters_off)
        self._synced: dict[str, str] = {}  # bank name -> store version loaded (the model thread's)
        # user -> connections that get the user's job steps pushed: those that started the job or
        # asked for its status. A user's steps never go to a connection that did not ask for them.
        self._watchers: dict[str, set[ServerConnection]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Frames up to 4x the protocol limit reach ``protocol.decode``, which answers
        # ``too_large``; only beyond that does the websocket layer close the connection.
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=4 * max(self.config.max_message_bytes, self.config.max_upload_bytes),
        )
        if self._preloaded is not None:
            self._ready(self._preloaded)
        else:
            self._loop.run_in_executor(self._executor, self._load)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = list(self._server.sockets)[0].getsockname()[:2]
        return f"ws://{host}:{port}"

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._scheduler is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._scheduler.stop)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._prompts.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> None:
        try:
            # With vLLM generating, this copy only builds and tokenises prompts: the CPU is enough.
            device = "cpu" if self.config.serving_engine == "vllm" else self.config.device
            loaded = load_model(self._choice.model, device=device, dtype=self.config.dtype)
            self._ready(loaded)
        except ModelUnavailable as exc:
            log.error("%s", exc)
            self._set_state("error", str(exc))
        except Exception as exc:  # a broken model folder, a bug: report it, keep serving status
            log.exception("loading the model %s failed", self._choice.model)
            self._set_state("error", f"loading the model {self._choice.name!r} failed: {exc!r}")

    def _ready(self, loaded: LoadedModel) -> None:
        bank, scheduler = self._build(loaded)
        device = scheduler.device if self.config.serving_engine == "vllm" else loaded.device  # vLLM: its server
        self._loaded, self._bank, self._device, self._scheduler = loaded, bank, device, scheduler
        self.metrics.adapters_resident.set(len(bank.loaded()))
        self._set_state("ready", "")

    def _build(self, loaded: LoadedModel) -> tuple[Any, Scheduler]:
        """The adapter bank (with the shared adapters) and the scheduler of ``loaded`` (any thread)."""
        from .lora import AdapterBank, AdapterBankConfig, AdapterError

        engine = Engine(loaded, self.config.engine)
        vllm = None
        if self.config.serving_engine == "vllm":
            from .engines.vllm_setup import start_vllm

            bank, vllm = start_vllm(self.config, engine, model=loaded.name, metrics=self.metrics)
        else:
            bank = AdapterBank.attach(loaded.model, AdapterBankConfig(max_adapters=self.config.max_adapters, max_rank=self.config.max_rank))
        if self.config.shared_adapters:
            for folder in sorted(Path(self.config.shared_adapters).iterdir()):
                if (folder / "adapter_config.json").is_file() and _NAME.fullmatch(folder.name):
                    try:
                        bank.load(f"{SHARED}/{folder.name}", folder)
                    except AdapterError as exc:
                        log.error("shared adapter %s not loaded: %s", folder, exc)
        scheduling = SchedulerConfig(max_batch=self.config.max_batch, max_queue=self.config.max_queue,
                                     prefix_cache_bytes=self.config.prefix_cache_mb << 20)  # fmt: skip
        return bank, vllm or Scheduler(engine, bank=bank, config=scheduling, metrics=self.metrics)

    def _set_state(self, state: str, message: str) -> None:
        """Record the state and push it to every client (called from any thread)."""
        self._state, self._message = state, message
        log.info("backend state: %s %s", state, message)
        frame = encode(self._status(None))
        for ws in list(self._connections):
            asyncio.run_coroutine_threadsafe(_send_quietly(ws, frame), self._loop)

    def _status(self, reply_to: Any) -> Status:
        message = self._message or (self._adapters_off if self._state == "ready" else "")
        choice = self._choice
        offer = ModelOffer(model=choice.offer.repo_id, bytes=choice.offer.download_bytes) if choice.offer else None
        return Status(reply_to=reply_to, state=self._state, model=choice.name, device=self._device, message=message,  # type: ignore[arg-type]
                      reason=choice.reason, offer=offer)

    # -- connections -----------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request) -> Any:
        """Refuse the websocket upgrade without the shared token; answer /health and /metrics."""
        url = urlparse(request.path)
        if url.path == "/health":
            return connection.respond(HTTPStatus.OK, f"{self._state}\n")
        if url.path == "/metrics":
            body = self.metrics.render()
            headers = Headers([("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), ("Content-Length", str(len(body)))])
            return Response(HTTPStatus.OK.value, "OK", headers, body)
        header = request.headers.get("Authorization", "")
        offered = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        offered = offered or parse_qs(url.query).get("token", [""])[0]
        if not hmac.compare_digest(offered.encode(), self.config.token.encode()):
            log.warning("refused a connection from %s: missing or wrong token", connection.remote_address)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid token is required (Authorization: Bearer <token>)\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self._connections.add(ws)
        self.metrics.connections.inc()
        running: dict[Any, _Running] = {}
        try:
            await ws.send(encode(self._status(None)))
            async for raw in ws:
                try:
                    await self._dispatch(ws, raw, running)
                except ConnectionClosed:
                    raise
                except Exception as exc:  # a bug in serving one frame: answer it, keep the connection
                    log.exception("serving a frame failed")
                    reply_to = _frame_id(raw)
                    await ws.send(encode(error_reply(reply_to, "internal", f"request failed: {str(exc)[:300]}")))
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            self._connections.discard(ws)
            for watchers in self._watchers.values():
                watchers.discard(ws)
            self.metrics.connections.dec()
            for job in running.values():
                job.cancel.set()
            if running and self._scheduler is not None:
                self._scheduler.wake()

    async def _dispatch(self, ws: ServerConnection, raw, running: dict) -> None:
        try:
            limit = self.config.max_message_bytes
            size = len(raw)  # characters or bytes: either way a lower bound of the byte size
            if size <= limit:
                message = protocol.decode(raw, limit=limit)
            else:
                # Only ``personalize_start`` (the user's examples) may be this large; anything else,
                # readable or not, is answered as too large, as it always was.
                try:
                    message = protocol.decode(raw, limit=self.config.max_upload_bytes)
                except ProtocolError as exc:
                    head = raw[:4096] if isinstance(raw, str) else bytes(raw[:4096]).decode("utf-8", "replace")
                    if exc.error_type != "too_large" and _UPLOAD_HEAD.match(head):
                        raise  # a personalize_start within the upload limit, wrong otherwise: say how, with its id
                    message = None
                if not isinstance(message, PersonalizeStart):
                    raise ProtocolError("too_large", f"message of {size} bytes exceeds the limit of {limit} bytes "
                                        f"(only personalize_start may carry up to {self.config.max_upload_bytes})",
                                        reply_to=getattr(message, "id", None))
        except ProtocolError as exc:
            await ws.send(encode(error_reply(exc.reply_to, exc.error_type, exc.message)))
            return
        if isinstance(message, Generate):
            if not _NAME.fullmatch(message.user):
                await ws.send(encode(error_reply(message.id, "malformed", f"generate.user {message.user[:80]!r} is not a "
                                                 "valid user name (letters, digits, '_.@+-', at most 128)")))
                return
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
                job.cancel.set()  # the scheduler answers with ``cancelled`` within one step
                if self._scheduler is not None:
                    self._scheduler.wake()
        elif isinstance(message, StatusRequest):
            await ws.send(encode(self._status(message.id)))
        elif isinstance(message, (AdaptersList, AdapterLoad, AdapterDelete)):
            await ws.send(encode(await self._adapters(message)))
        elif isinstance(message, (PersonalizeStart, PersonalizeStatus, PersonalizeCancel, PersonalizeJudged,
                                  AdapterVersions, AdapterRollback)):
            await ws.send(encode(await self._personalize(ws, message)))
        elif isinstance(message, ModelDownload):
            from .hot_switch import start_download

            if message.id in running:
                await ws.send(encode(error_reply(message.id, "malformed", f"request id {message.id!r} is already running")))
                return
            cancel = threading.Event()
            task = start_download(self, ws, message, cancel)
            if task is not None:
                running[message.id] = _Running(task=task, cancel=cancel)
                task.add_done_callback(lambda _t, key=message.id: running.pop(key, None))
        else:
            # Not a request: its ``reply_to`` names one of the client's own requests, which must not
            # get a second final answer from this error.
            await ws.send(encode(error_reply(None, "unknown_type", f"{message.type!r} is sent by the backend, not to it")))

    # -- adapters --------------------------------------------------------------------------

    def _visible(self, user: str) -> tuple[list[str], list[str]]:
        """(the user's own adapter ids, the shared ones) among those resident."""
        loaded = self._bank.loaded() if self._bank is not None else []
        own = sorted(key.split("/", 1)[1] for key in loaded if key.startswith(f"{user}/"))
        shared = sorted(key for key in loaded if key.startswith(f"{SHARED}/"))
        return own, shared

    def _resolve(self, user: str, adapter: str) -> str:
        """The bank key of ``user``'s adapter id; ``ProtocolError`` if it is not theirs or not loaded."""
        key = adapter if adapter.startswith(f"{SHARED}/") else f"{user}/{adapter}"
        if self._bank is None or key not in self._bank.loaded() or (not key.startswith(f"{SHARED}/") and not _NAME.fullmatch(adapter)):
            own, shared = self._visible(user)
            raise ProtocolError("unknown_adapter", f"adapter {adapter!r} is not loaded for user {user!r}; available: {own + shared}")
        return key

    async def _adapters(self, message) -> Any:
        if self._scheduler is None:
            return error_reply(message.id, "model_unavailable", self._message or "the model is still loading; try again shortly")
        user = message.user
        if not _NAME.fullmatch(user) or user == SHARED:
            return error_reply(message.id, "malformed", f"user {user!r} is not a valid user name")
        if isinstance(message, AdapterDelete) and message.name.startswith(f"{SHARED}/"):
            return error_reply(message.id, "unknown_adapter", f"{message.name!r} is a shared adapter; only the operator can remove it")
        if isinstance(message, (AdapterLoad, AdapterDelete)) and not _NAME.fullmatch(message.name):
            return error_reply(message.id, "malformed", f"adapter name {message.name!r} must be one path component of letters, digits, '_.@+-'")
        try:
            if isinstance(message, AdapterLoad):
                folder = self._adapter_folder(user, message.path)
                await asyncio.wrap_future(self._scheduler.call(lambda: self._load_adapter(f"{user}/{message.name}", folder)))
            elif isinstance(message, AdapterDelete):
                key = self._resolve(user, message.name)
                await asyncio.wrap_future(self._scheduler.call(lambda: self._bank.unload(key)))
        except ProtocolError as exc:
            return error_reply(message.id, exc.error_type, exc.message)
        except Exception as exc:  # AdapterError and friends: the message says how to fix it
            from .lora import AdapterError

            if not isinstance(exc, AdapterError):
                log.exception("adapter request %.200r failed", message.id)
                return error_reply(message.id, "internal", f"adapter request failed: {exc!r}")
            return error_reply(message.id, "unknown_adapter", str(exc))
        finally:
            if self._bank is not None:
                self.metrics.adapters_resident.set(len(self._bank.loaded()))
        log.info("adapter request %s by user %.200r done", message.type, user)
        own, shared = self._visible(user)
        return Adapters(reply_to=message.id, adapters=own, shared=shared)

    async def _personal_rows(self, user: str, n: int) -> tuple[list[Optional[str]], list[Optional[str]]]:
        """(bank names, labels) of ``n`` rows sampled across ``user``'s adapters in service."""
        if self._runner is None or not _NAME.fullmatch(user) or user == SHARED:
            return [None] * n, [None] * n
        try:
            names = await asyncio.wrap_future(self._scheduler.call(lambda: self._sync_user(user)))
        except Exception as exc:  # a broken published folder must not cost the user completions
            log.error("%s's adapters could not be loaded; completing with the base model: %s", user, exc)
            return [None] * n, [None] * n
        if not names:
            return [None] * n, [None] * n
        rows = [names[i % len(names)] for i in range(n)]
        return rows, [r.split("/", 1)[1] for r in rows]

    def _adapter_folder(self, user: str, path: str) -> Path:
        if not self.config.adapter_root or self._adapters_off:
            raise ProtocolError("unknown_adapter", self._adapters_off or "this backend loads no adapters from disk: the operator must start it with --adapter-root DIR")
        base = (Path(self.config.adapter_root) / user).resolve()
        folder = (base / path).resolve()
        if not folder.is_relative_to(base):
            raise ProtocolError("unknown_adapter", f"adapter path {path!r} leaves your folder; give a path inside {user}/ of the adapter root")
        return folder

    def _load_adapter(self, key: str, folder: Path) -> None:
        """(model thread) Load, refusing to evict an adapter the running batch decodes with."""
        bank, running = self._bank, self._scheduler.running_adapters()
        loaded = bank.loaded()
        if key not in loaded and len(loaded) >= self.config.max_adapters and loaded[0] in running:
            raise ProtocolError("overloaded", "every adapter slot is in use by running requests; try again shortly")
        bank.load(key, folder)

    # -- personalization -------------------------------------------------------------------

    async def _personalize(self, ws: ServerConnection, message) -> Any:
        """Answer a personalize or version request of ``message.user`` (only ever theirs)."""
        user = message.user
        if not _NAME.fullmatch(user) or user == SHARED:
            return error_reply(message.id, "malformed", f"user {user!r} is not a valid user name")
        if self._runner is None:
            return error_reply(message.id, "bad_request", self._adapters_off or "this backend keeps no adapters: the "
                               "operator must start it with --adapter-root DIR to personalize")
        from .training.jobs import JobConflict
        from .training.store import StoreError

        runner = self._runner
        try:
            if isinstance(message, PersonalizeStart):
                state = await runner.start(message, self._job_changed)
                self._watchers.setdefault(user, set()).add(ws)
                return JobFrame(reply_to=message.id, job=state)
            if isinstance(message, PersonalizeStatus):
                self._watchers.setdefault(user, set()).add(ws)
                return JobFrame(reply_to=message.id, job=runner.status(user))
            if isinstance(message, PersonalizeCancel):
                return JobFrame(reply_to=message.id, job=runner.cancel(user))
            if isinstance(message, PersonalizeJudged):
                return JobFrame(reply_to=message.id, job=runner.judged(user, message.before, message.after))
            if isinstance(message, AdapterRollback):
                before = runner.store.current(user, message.adapter)
                runner.store.rollback(user, message.adapter, to=message.to)  # refuses a corrupt version
                try:
                    await self._hot_load(user)
                except Exception as exc:  # read whole but refused by the bank: put the previous one back
                    log.error("rollback of %s/%s refused by the bank: %s", user, message.adapter, exc)
                    if before is not None:
                        runner.store.rollback(user, message.adapter, to=before.version)
                        await self._hot_load(user)
                    return error_reply(message.id, "bad_request", f"cannot roll {message.adapter!r} back: the adapter "
                                       f"cannot be served ({str(exc)[:300]}); "
                                       f"{before.version if before else 'the current version'} stays in service")
            return Versions(reply_to=message.id, adapters=self._versions(user))
        except JobConflict as exc:
            return error_reply(message.id, "job_running", str(exc))
        except (StoreError, ValueError) as exc:
            return error_reply(message.id, "bad_request", str(exc))
        except Exception as exc:  # e.g. the bank refusing a version: this request fails, the connection goes on
            log.exception("%s %.200r of user %.200r failed", message.type, message.id, user)
            return error_reply(message.id, "internal", f"{message.type} failed: {str(exc)[:300]}")

    def _job_changed(self, state) -> None:
        """Push a step of ``state.user``'s job to the connections watching that user."""
        frame = encode(JobFrame(reply_to=None, job=state))
        for ws in list(self._watchers.get(state.user, ())):
            asyncio.ensure_future(_send_quietly(ws, frame))

    def _versions(self, user: str) -> list[AdapterInfo]:
        store = self._runner.store
        out = []
        for name, entry in store.list(user).items():
            infos = []
            for version in entry["versions"]:
                metrics = store._version(user, name, version).metrics
                heldout = metrics.get("heldout")
                infos.append(VersionInfo(
                    version=version, created=float(metrics.get("trained_at", 0.0)),
                    metrics=build(EvalMetrics, heldout, path="metrics") if isinstance(heldout, dict) else None,
                    train_examples=int(metrics.get("train_examples", 0))))  # fmt: skip
            out.append(AdapterInfo(name=name, current=entry["current"], versions=infos))
        return out

    async def _hot_load(self, user: str) -> None:
        """Bring ``user``'s adapters in service into the bank (in the model thread); no-op before ready."""
        if self._scheduler is None:
            return
        await asyncio.wrap_future(self._scheduler.call(lambda: self._sync_user(user)))

    def _sync_user(self, user: str) -> list[str]:
        """(model thread) The bank names of ``user``'s adapters in service, (re)loading what changed.

        Variants first (row i of a request uses variant i mod K), else the main adapter, else none.
        """
        from .training.hotload import adapters_in_service

        wanted = adapters_in_service(self._runner.store, user)
        loaded = set(self._bank.loaded())
        for name, (version, folder) in wanted.items():
            if self._synced.get(name) != version or name not in loaded:
                self._load_adapter(name, folder)
                self._synced[name] = version
        prefix = f"{user}/"
        for name in [n for n in self._synced if n.startswith(prefix) and n not in wanted]:
            if name in self._bank.loaded() and name not in self._scheduler.running_adapters():
                self._bank.unload(name)
            del self._synced[name]
        self.metrics.adapters_resident.set(len(self._bank.loaded()))
        variants = sorted((n for n in wanted if n.startswith(f"{prefix}variant-")), key=lambda n: int(n.rsplit("-", 1)[1]))
        return variants or [n for n in wanted if n == f"{prefix}personal"]

    # -- generation ------------------------------------------------------------------------

    async def _generate(self, ws: ServerConnection, request: Generate, cancel: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        arrived = time.monotonic()
        scheduler, model_name = self._scheduler, self._choice.name  # one model for the whole request, whatever a switch does
        try:
            if scheduler is None:
                reason = self._message if self._state == "error" else "the model is still loading; try again shortly"
                await ws.send(encode(error_reply(request.id, "model_unavailable", reason)))
                return
            n = max(1, min(request.n, self.config.engine.max_candidates))
            labels = [request.adapters[i % len(request.adapters)] for i in range(n)] if request.adapters else [None] * n
            try:
                if request.personal and not request.adapters:
                    rows, labels = await self._personal_rows(request.user, n)
                else:
                    rows = [None if a is None else self._resolve(request.user, a) for a in labels]
            except ProtocolError as exc:
                await ws.send(encode(error_reply(request.id, exc.error_type, exc.message)))
                return
            outbox: asyncio.Queue = asyncio.Queue()
            done: asyncio.Future = loop.create_future()

            def emit(candidate: int, text: str) -> None:
                loop.call_soon_threadsafe(outbox.put_nowait, Token(reply_to=request.id, candidate=candidate, text=text))

            def ended(index: int, candidate) -> None:
                frame = CandidateEnd(reply_to=request.id, index=index, candidate=candidate)
                loop.call_soon_threadsafe(outbox.put_nowait, frame)  # after that candidate's tokens, before result

            def finish(candidates, error) -> None:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result((candidates, error)))

            deadline = arrived + request.deadline_ms / 1000 if request.deadline_ms is not None else None
            prepared = await loop.run_in_executor(self._prompts, scheduler.engine.prepare, request)
            # From here on only the bounded notebook travels: what the model thread reads of it (stop
            # rules, the brackets open at the cursor, the echo of the line) stays small, however big the frame.
            request = dataclasses.replace(request, context=prepared.context)
            job = Job(request=request, rows=rows, labels=labels, emit=emit, finish=finish, deadline=deadline, cancelled=cancel,
                      on_candidate=ended, prepared=prepared, submitted=arrived)  # fmt: skip
            try:
                scheduler.submit(job)
            except Overloaded as exc:
                await ws.send(encode(error_reply(request.id, "overloaded", str(exc))))
                return
            sender = asyncio.create_task(_drain(ws, outbox))
            try:
                candidates, error = await done
            finally:
                outbox.put_nowait(None)
                await sender
            if error is not None:
                await ws.send(encode(error_reply(request.id, error[0], error[1])))
            else:
                await ws.send(encode(Result(reply_to=request.id, candidates=candidates, model=model_name)))
        except ConnectionClosed:
            cancel.set()
        except asyncio.CancelledError:
            cancel.set()
            raise
        except Exception as exc:
            log.exception("generate %.200r failed", request.id)
            await _send_quietly(ws, encode(error_reply(request.id, "internal", f"generation failed: {exc!r}")))


def _choose(config: BackendConfig) -> Choice:
    """The model to serve; a failure of the choice itself (no CUDA for --device cuda) is reported by the load."""
    try:
        return choose_model(config.model, model_dirs=config.model_dirs, device=config.device)
    except ModelUnavailable as exc:
        from .cli import default_model

        model = default_model() if config.model == "auto" else config.model
        return Choice(model=model, name=model, reason=str(exc), source="configured")


def _frame_id(raw) -> Any:
    """The ``id`` of a frame that parses as an object with a plain id, else ``None`` (for error replies)."""
    try:
        obj = loads(raw)
    except Exception:  # noqa: BLE001 - anything unreadable has no id to answer
        return None
    ident = obj.get("id") if isinstance(obj, dict) else None
    return ident if valid_id(ident) else None


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
