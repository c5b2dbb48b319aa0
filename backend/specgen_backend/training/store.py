"""Per-user, versioned adapters on disk, published atomically, with rollback.

Layout::

    <root>/<user>/<adapter>/v1/ v2/ ...   one folder per published version (never modified)
    <root>/<user>/<adapter>/current       the name of the version in service ("v2")
    <root>/<user>/.staging/               where jobs write before publishing
    <root>/<user>/.lock                   held (flock) by the one job of this user, in any process

A version is copied into a temporary folder beside its final place and renamed into it, so it
appears whole or not at all; ``current`` is replaced with ``os.replace``. A crash at any point
leaves the previous ``current`` and its folder untouched. Every method takes the user and only
ever looks under that user's folder; names are checked so that none can climb out of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["AdapterStore", "AdapterVersion", "StoreError", "StoreBusy", "validate_name"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_VERSION = re.compile(r"^v(\d+)$")


class StoreError(ValueError):
    """A bad name, an unknown adapter or version; the message says which."""


class StoreBusy(RuntimeError):
    """Another job (in this process or another) holds the user's lock."""


def validate_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise StoreError(f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '-', '.', '@', "
                         f"starting with a letter or digit, no path separators or '..'")
    return name


@dataclass(frozen=True)
class AdapterVersion:
    user: str
    adapter: str
    version: str  # "v3"
    path: Path
    metrics: dict


class AdapterStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------------

    def user_dir(self, user: str) -> Path:
        path = (self.root / validate_name("user", user)).resolve()
        if path.parent != self.root:  # belt and braces on top of the name check
            raise StoreError(f"user {user!r} resolves outside the adapter store")
        return path

    def _adapter_dir(self, user: str, adapter: str) -> Path:
        return self.user_dir(user) / validate_name("adapter", adapter)

    def staging(self, user: str) -> Path:
        """A fresh folder for a job of ``user`` to write into (removed by the caller or by ``clean``)."""
        base = self.user_dir(user) / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=base))

    @contextlib.contextmanager
    def lock(self, user: str):
        """Hold ``user``'s job lock; ``StoreBusy`` at once if another job holds it.

        An advisory ``flock`` on ``<user>/.lock``: it is shared by every process using this store
        (the backend's jobs, the CLI) and released by the kernel when the holder dies, so a crashed
        job never leaves the user locked out.
        """
        folder = self.user_dir(user)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreBusy(f"a personalize job for {user!r} is already running; wait for it or cancel it") from None
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def clean_staging(self, user: str) -> None:
        shutil.rmtree(self.user_dir(user) / ".staging", ignore_errors=True)

    # -- reading -------------------------------------------------------------------------------

    def versions(self, user: str, adapter: str) -> list[str]:
        folder = self._adapter_dir(user, adapter)
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in folder.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
        return [name for _, name in sorted(found)]

    def current(self, user: str, adapter: str) -> Optional[AdapterVersion]:
        """The version in service, or ``None`` if none was published."""
        pointer = self._adapter_dir(user, adapter) / "current"
        try:
            version = pointer.read_text().strip()
        except FileNotFoundError:
            return None
        return self._version(user, adapter, version)

    def _version(self, user: str, adapter: str, version: str) -> AdapterVersion:
        if not _VERSION.match(version):
            raise StoreError(f"invalid version {version!r} for adapter {adapter!r}")
        path = self._adapter_dir(user, adapter) / version
        if not path.is_dir():
            raise StoreError(f"user {user!r} has no version {version!r} of adapter {adapter!r}")
        try:
            metrics = json.loads((path / "metrics.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            metrics = {}
        return AdapterVersion(user=user, adapter=adapter, version=version, path=path, metrics=metrics)

    def list(self, user: str) -> dict[str, dict]:
        """{adapter: {"current": "v2" | None, "versions": [...]}} for this user only."""
        folder = self.user_dir(user)
        if not folder.is_dir():
            return {}
        out = {}
        for child in sorted(folder.iterdir()):
            if child.is_dir() and _NAME.match(child.name):
                current = self.current(user, child.name)
                out[child.name] = {"current": current.version if current else None,
                                   "versions": self.versions(user, child.name)}
        return out

    # -- writing -------------------------------------------------------------------------------

    def publish(self, user: str, adapter: str, source: str | Path, *, metrics: Optional[dict] = None) -> AdapterVersion:
        """Copy ``source`` in as the next version and put it in service."""
        folder = self._adapter_dir(user, adapter)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=folder))
        try:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            (tmp / "metrics.json").write_text(json.dumps(metrics or {}, indent=1, sort_keys=True))
            existing = self.versions(user, adapter)
            number = int(existing[-1][1:]) + 1 if existing else 1
            version = f"v{number}"
            os.rename(tmp, folder / version)  # atomic on one file system; fails if it exists
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._point(folder, version)
        log.info("published %s/%s %s", user, adapter, version)
        return self._version(user, adapter, version)

    def rollback(self, user: str, adapter: str, *, to: Optional[str] = None) -> AdapterVersion:
        """Put ``to`` (default: the version before the current one) back in service."""
        current = self.current(user, adapter)
        if current is None:
            raise StoreError(f"user {user!r} has no published adapter {adapter!r} to roll back")
        if to is None:
            earlier = [v for v in self.versions(user, adapter) if int(v[1:]) < int(current.version[1:])]
            if not earlier:
                raise StoreError(f"{adapter!r} {current.version} is the first version; there is nothing to roll back to")
            to = earlier[-1]
        target = self._version(user, adapter, to)
        self._point(self._adapter_dir(user, adapter), to)
        return target

    @staticmethod
    def _point(folder: Path, version: str) -> None:
        tmp = folder / f".current-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(version)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / "current")
