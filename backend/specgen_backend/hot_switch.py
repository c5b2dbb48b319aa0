"""``model_download``: fetch a model of the list into the hub cache, then serve it without a restart.

The download runs in a worker thread (``download.py``) and streams ``download_progress`` frames to the
connection that asked, in order; ``cancel`` (or that connection closing) stops it between two chunks
and keeps what came. Once the model is here and verified it is loaded in a worker thread (under
``loading.LOAD_LOCK``, like every load), its adapter bank and scheduler are built there, and the
swap happens on the event loop, where every request reads the scheduler: requests already running
finish on the old model (they hold it), the next ones get the new one. The old scheduler is stopped
once it has drained. The new ``status`` (model, why) is pushed to every connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
import time
from typing import TYPE_CHECKING

from .download import Cancelled, DownloadError, Offline, download_model
from .loading import ModelUnavailable, load_model
from .model_choice import CATALOG, Choice, catalog_entry
from .protocol import DownloadProgress, ModelDownload, ModelDownloaded, encode, error_reply

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from .server import Backend

__all__ = ["start_download"]

log = logging.getLogger(__name__)

RETIRE_WAIT_S = 60.0  # how long the old model may finish its requests before its scheduler stops


def start_download(backend: "Backend", ws: "ServerConnection", message: ModelDownload, cancel: threading.Event) -> asyncio.Task:
    """Start serving ``message``; the task sends its progress and exactly one final answer."""
    return asyncio.create_task(_download(backend, ws, message, cancel))


async def _download(backend: "Backend", ws, message: ModelDownload, cancel: threading.Event) -> None:
    from .server import _drain, _send_quietly

    entry = catalog_entry(message.model)
    if entry is None:
        await _send_quietly(ws, encode(error_reply(message.id, "bad_request", f"{message.model!r} is not a model this "
                                                   f"backend downloads; one of {[m.repo_id for m in CATALOG]}")))
        return
    if backend._download is not None and not backend._download.done():
        await _send_quietly(ws, encode(error_reply(message.id, "bad_request", "a model download is already running; "
                                                   "cancel it or wait for it to end")))
        return
    if backend._state == "loading":
        await _send_quietly(ws, encode(error_reply(message.id, "bad_request", "the backend is still loading its model; "
                                                   "ask again when it is ready")))
        return
    backend._download = asyncio.current_task()
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue = asyncio.Queue()
    sender = asyncio.create_task(_drain(ws, outbox))

    def progress(p, phase: str = "download") -> None:  # from the download thread
        frame = DownloadProgress(reply_to=message.id, model=entry.repo_id, done_bytes=p.done, total_bytes=p.total,
                                 transferred_bytes=p.transferred, rate=p.rate, eta_s=p.eta_s, phase=phase)  # type: ignore[arg-type]
        loop.call_soon_threadsafe(outbox.put_nowait, frame)

    final = None
    try:
        fetch = functools.partial(download_model, entry.repo_id, on_progress=progress, cancel=cancel,
                                  model_dirs=backend.config.model_dirs)
        started = time.monotonic()
        done = await loop.run_in_executor(None, fetch)
        log.info("downloaded %s (%d of %d bytes transferred) in %.1f s", entry.repo_id, done.transferred, done.total,
                 time.monotonic() - started)
        switched = False
        if message.switch:
            outbox.put_nowait(DownloadProgress(reply_to=message.id, model=entry.repo_id, done_bytes=done.total,
                                               total_bytes=done.total, transferred_bytes=done.transferred, eta_s=0.0,
                                               phase="load"))  # fmt: skip
            await _switch(backend, done.path, Choice(
                model=done.path, name=entry.repo_id, source="hf_cache",
                reason=f"{entry.short} downloaded on request into the Hugging Face cache ({done.verified.split(':')[0]})"))
            switched = True
        final = ModelDownloaded(reply_to=message.id, model=entry.repo_id, path=done.path, total_bytes=done.total,
                                transferred_bytes=done.transferred, verified=done.verified, switched=switched)
    except Offline as exc:
        final = error_reply(message.id, "offline", str(exc))
    except Cancelled as exc:
        final = error_reply(message.id, "cancelled", str(exc))
    except DownloadError as exc:
        final = error_reply(message.id, "bad_request", str(exc))
    except ModelUnavailable as exc:
        final = error_reply(message.id, "model_unavailable", f"{entry.repo_id} was downloaded but cannot be served "
                            f"({exc}); {backend._choice.name} stays in service")
    except Exception as exc:  # a bug: answer it, keep serving the model in service
        log.exception("model_download %.200r failed", message.id)
        final = error_reply(message.id, "internal", f"model download failed: {str(exc)[:300]}")
    finally:
        outbox.put_nowait(None)
        await sender  # every progress frame before the final answer
        if final is not None:
            await _send_quietly(ws, encode(final))
        backend._download = None


async def _switch(backend: "Backend", path: str, choice: Choice) -> None:
    """Load ``path`` off the loop, then swap it in on the loop (between two batches of the new and old schedulers)."""
    loop = asyncio.get_running_loop()
    load = functools.partial(load_model, path, device=backend.config.device, dtype=backend.config.dtype)
    loaded = await loop.run_in_executor(None, load)  # takes LOAD_LOCK
    bank, scheduler = await loop.run_in_executor(None, backend._build, loaded)
    old = backend._scheduler
    # On the loop thread, between two awaits: no request sees half of the swap.
    backend._loaded, backend._bank, backend._device, backend._scheduler = loaded, bank, loaded.device, scheduler
    backend._choice = choice
    backend._synced = {}  # users' adapters are loaded again into the new bank when asked for
    if backend._runner is not None:  # personalize jobs train adapters for the model in service
        backend._runner.config = dataclasses.replace(backend._runner.config, model=path)
    backend.metrics.adapters_resident.set(len(bank.loaded()))
    backend._set_state("ready", "")
    log.info("now serving %s (%s)", choice.name, path)
    if old is not None:
        loop.run_in_executor(None, _retire, old)


def _retire(scheduler) -> None:
    """Stop ``scheduler`` once the requests it holds are answered (at most RETIRE_WAIT_S)."""
    deadline = time.monotonic() + RETIRE_WAIT_S
    while (scheduler.queue_depth or scheduler.batch_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    scheduler.stop()
