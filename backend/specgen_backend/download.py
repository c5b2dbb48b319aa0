"""Download a model from the Hugging Face hub into its cache: resumable, verified, cancellable.

``huggingface_hub``'s own downloads (2.x) resume only within one call and delete the partial file
when interrupted, so a cancelled or Ctrl+C'd gigabyte would start again from zero. This module
speaks the hub's HTTP API itself (the same requests ``hf_hub_download`` makes):

- ``GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true``: the commit and, for every
  file, its size and blob id (the git blob sha1, or for LFS files the sha256 of the content);
- ``GET {endpoint}/{repo}/resolve/{commit}/{file}`` with ``Range: bytes=N-`` to go on from the
  partial file ``blobs/<id>.incomplete``.

Every file is verified before it enters the cache: its size, and its sha256 (LFS files: the weights)
or git blob sha1 (small files) against the hub's metadata. The result is laid out as the hub cache
(``models--org--name/blobs``, ``snapshots/<commit>``, ``refs/<revision>``), so ``huggingface_hub``,
``transformers`` and the model choice ``auto`` find it like any cached model. The endpoint and the
cache are read from the environment at each call (``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME``,
``HF_HUB_OFFLINE``, ``HF_TOKEN``).
"""

from __future__ import annotations

import collections
import fnmatch
import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import quote, urlparse

from .model_choice import hub_cache_dir, model_dir_help

__all__ = ["DownloadError", "Offline", "Cancelled", "Progress", "Downloaded", "download_model", "hub_endpoint"]

log = logging.getLogger(__name__)

CHUNK = 1 << 16
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
PROGRESS_INTERVAL_S = 0.1  # progress reported at most this often (the last report always comes)
RATE_WINDOW_S = 5.0  # the rate is measured over the last seconds, so a stall shows quickly
# What a causal LM needs: configs, tokenizer files, safetensors weights, the licence. Other weight
# formats (.bin, .gguf, onnx/ ...) are the same weights again and are not fetched.
WANTED = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "LICENSE*", "README.md")


class DownloadError(RuntimeError):
    """The download failed; the message says why and what to do."""


class Offline(DownloadError):
    """There is no network to the hub (or the hub is switched off by ``HF_HUB_OFFLINE``)."""


class Cancelled(DownloadError):
    """Stopped on request; what came is kept and the next download of the model goes on from there."""


@dataclass(frozen=True)
class Progress:
    done: int  # bytes of the model on disk (kept from before + transferred now)
    total: int  # bytes of the whole model
    transferred: int  # bytes transferred by this call
    rate: float  # bytes per second, over the last seconds
    eta_s: Optional[float]  # seconds left at that rate (None: unknown)
    file: str  # the file being transferred


@dataclass(frozen=True)
class Downloaded:
    repo_id: str
    commit: str
    path: str  # the snapshot folder
    total: int  # bytes of the model
    transferred: int  # bytes transferred by this call (0: it was all there)
    files: int
    verified: str  # what was checked, in words


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def download_model(repo_id: str, *, revision: str = "main", cache_dir: Optional[Path] = None,
                   on_progress: Optional[Callable[[Progress], None]] = None,
                   cancel: Optional[threading.Event] = None, model_dirs: tuple[str, ...] = ()) -> Downloaded:
    """Fetch ``repo_id`` at ``revision`` into the hub cache; raise ``Offline``, ``Cancelled`` or ``DownloadError``."""
    import httpx

    if "/" not in repo_id or repo_id.count("/") != 1 or any(p in ("", ".", "..") for p in repo_id.split("/")):
        raise DownloadError(f"{repo_id!r} is not a hub model id (owner/name, e.g. Qwen/Qwen2.5-Coder-0.5B)")
    endpoint = hub_endpoint()
    offline = _offline_reason(endpoint)
    if offline:
        raise Offline(f"no network: {offline}. To use {repo_id} without one, {model_dir_help(model_dirs, repo_id)}")
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    cancel = cancel or threading.Event()
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    with httpx.Client(headers=_headers(), timeout=timeout, follow_redirects=True) as client:
        try:
            commit, files = _plan(client, endpoint, repo_id, revision)
        except httpx.TransportError as exc:
            raise Offline(f"no network: the hub at {endpoint} cannot be reached ({exc!r}). To use {repo_id} without "
                          f"one, {model_dir_help(model_dirs, repo_id)}") from None
        total = sum(f.size for f in files)
        meter = _Meter(total=total, done=sum(_on_disk(repo / "blobs" / f.blob, f.size) for f in files), report=on_progress)
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        for remote in files:
            if cancel.is_set():
                raise Cancelled(f"download of {repo_id} cancelled; {meter.kept()} kept, the next download goes on from there")
            blob = repo / "blobs" / remote.blob
            if not blob.is_file():
                url = f"{endpoint}/{quote(repo_id)}/resolve/{commit}/{quote(remote.path)}"
                try:
                    _fetch(client, url, remote, blob, meter, cancel)
                except httpx.TransportError as exc:
                    raise DownloadError(f"the download of {repo_id} broke off ({exc!r}); {meter.kept()} kept: "
                                        f"start it again to go on") from None
                except Cancelled:
                    raise Cancelled(f"download of {repo_id} cancelled; {meter.kept()} kept, the next download goes "
                                    f"on from there") from None
            _link(repo / "snapshots" / commit / remote.path, blob)
        if revision != commit:
            (repo / "refs").mkdir(exist_ok=True)
            (repo / "refs" / revision).write_text(commit)
        meter.finish()
    return Downloaded(repo_id=repo_id, commit=commit, path=str(repo / "snapshots" / commit), total=total,
                      transferred=meter.transferred, files=len(files),
                      verified=f"{len(files)} files checked against the hub's metadata for commit {commit[:12]}: "
                               "size, and sha256 (weights) or git blob sha1 (small files)")  # fmt: skip


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Remote:
    path: str
    size: int
    blob: str  # the cache's blob name: the sha256 for LFS files, else the git blob sha1
    sha256: Optional[str]  # LFS files


def _plan(client, endpoint: str, repo_id: str, revision: str) -> tuple[str, list[_Remote]]:
    """The commit of ``revision`` and the files to fetch."""
    response = client.get(f"{endpoint}/api/models/{quote(repo_id)}/revision/{quote(revision, safe='')}",
                          params={"blobs": "true"})
    if response.status_code in (401, 403, 404):
        raise DownloadError(f"the hub has no model {repo_id!r} at {revision!r} that this machine may read "
                            f"(HTTP {response.status_code}); check the id, or log in (HF_TOKEN) for a gated model")
    if response.status_code != 200:
        raise DownloadError(f"the hub answered HTTP {response.status_code} for {repo_id}: {response.text[:200]}")
    try:
        info = response.json()
        commit = info["sha"]
        siblings = info["siblings"]
        files = []
        for s in siblings:
            name = s["rfilename"]
            if not any(fnmatch.fnmatch(Path(name).name, p) for p in WANTED) or "/" in name.replace("\\", "/"):
                continue  # only the top folder: subfolders hold other formats (onnx/, original/ ...)
            lfs = s.get("lfs") or None
            size = int(lfs["size"] if lfs else s["size"])
            sha256 = lfs["sha256"] if lfs else None
            files.append(_Remote(path=name, size=size, blob=sha256 or s["blobId"], sha256=sha256))
    except (ValueError, KeyError, TypeError) as exc:
        raise DownloadError(f"the hub's file list for {repo_id} is not what was expected ({exc!r}); "
                            "is HF_ENDPOINT a Hugging Face hub?") from None
    if not any(f.path == "config.json" for f in files) or not any(f.path.endswith(".safetensors") for f in files):
        raise DownloadError(f"{repo_id} has no config.json and safetensors weights at its top; it cannot be served")
    return commit, files


# -- one file ----------------------------------------------------------------------------------


def _fetch(client, url: str, remote: _Remote, blob: Path, meter: "_Meter", cancel: threading.Event) -> None:
    """Fetch ``remote`` into ``blob``, going on from ``blob.incomplete``; verify it; then rename."""
    partial = blob.with_name(blob.name + ".incomplete")
    have = partial.stat().st_size if partial.exists() else 0
    if have > remote.size:  # not this file's start: begin again
        partial.unlink()
        have = 0
    meter.file = remote.path
    if have < remote.size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:  # the partial is already whole
                pass
            elif response.status_code not in (200, 206):
                raise DownloadError(f"the hub answered HTTP {response.status_code} for {remote.path}")
            else:
                if have and response.status_code == 200:  # the server ignored the range: start over
                    meter.forget(have)
                    have = 0
                with partial.open("ab" if have else "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        if cancel.is_set():
                            raise Cancelled("cancelled")
                        out.write(chunk)
                        meter.add(len(chunk))
    size = partial.stat().st_size if partial.exists() else 0
    problem = _verify(partial, remote) if size == remote.size else f"{size} bytes, expected {remote.size}"
    if problem:
        partial.unlink(missing_ok=True)
        meter.forget(size)
        raise DownloadError(f"{remote.path} failed verification ({problem}); the bad copy was deleted, download again")
    os.replace(partial, blob)


def _on_disk(blob: Path, size: int) -> int:
    """Bytes of a file already here: all of it, or the partial an earlier download left (counted as done)."""
    if blob.is_file():
        return size
    partial = blob.with_name(blob.name + ".incomplete")
    have = partial.stat().st_size if partial.is_file() else 0
    return have if have <= size else 0


def _verify(path: Path, remote: _Remote) -> str:
    """"" if ``path`` is the file the hub describes, else what differs."""
    digest = hashlib.sha256() if remote.sha256 else hashlib.sha1(b"blob %d\0" % remote.size)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    expected = remote.sha256 or remote.blob
    return "" if digest.hexdigest() == expected else f"{'sha256' if remote.sha256 else 'sha1'} {digest.hexdigest()[:12]}…, expected {expected[:12]}…"


def _link(target: Path, blob: Path) -> None:
    """Put ``blob`` at ``target`` in the snapshot, as the hub cache does (a relative symlink, or a copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        target.symlink_to(os.path.relpath(blob, target.parent))
    except OSError:
        import shutil

        shutil.copyfile(blob, target)


class _Meter:
    """Bytes done, the rate over the last seconds, and the reports (at most every PROGRESS_INTERVAL_S)."""

    def __init__(self, *, total: int, done: int, report: Optional[Callable[[Progress], None]]):
        self.total, self.done, self.transferred, self.file = total, done, 0, ""
        self._report = report
        self._samples: collections.deque = collections.deque([(time.monotonic(), 0)])
        self._last = 0.0
        self._emit()

    def add(self, n: int) -> None:
        self.done += n
        self.transferred += n
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL_S:
            self._emit(now)

    def forget(self, n: int) -> None:
        self.done -= n

    def kept(self) -> str:
        return f"{self.done / 1e6:.1f} of {self.total / 1e6:.1f} MB"

    def finish(self) -> None:
        self._emit(force=True)

    def _emit(self, now: Optional[float] = None, *, force: bool = False) -> None:
        now = now or time.monotonic()
        self._last = now
        self._samples.append((now, self.transferred))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        rate = (self.transferred - b0) / (now - t0) if now > t0 else 0.0
        left = self.total - self.done
        eta = 0.0 if left <= 0 else (left / rate if rate > 0 else None)
        if self._report is not None:
            self._report(Progress(done=self.done, total=self.total, transferred=self.transferred, rate=rate, eta_s=eta,
                                  file=self.file))  # fmt: skip


# -- network -----------------------------------------------------------------------------------


def _offline_reason(endpoint: str, timeout: float = 3.0) -> str:
    """Why the hub cannot be reached ("" when it can): HF_HUB_OFFLINE, or no connection within ``timeout``."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set, so nothing is downloaded"
    url = urlparse(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        return f"the hub at {endpoint} cannot be reached ({exc.strerror or exc})"


def _headers() -> dict:
    try:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(library_name="specgen-backend")
    except Exception:  # an unusual token setup: anonymous, which serves every public model
        log.debug("no hub headers", exc_info=True)
        return {}
