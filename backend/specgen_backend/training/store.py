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

__all__ = ["AdapterStore", "AdapterVersion", "StoreError", "BrokenVersion", "StoreBusy", "validate_name",
           "verify_adapter_folder"]

log = logging.getLogger(__name__)

# Whole-string matches (``fullmatch``): ``$`` would also match before a trailing newline. ``+`` is
# what the Jupyter side puts between the slug and the keyed hash of a non-plain username.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
_VERSION = re.compile(r"v(\d{1,9})")


class StoreError(ValueError):
    """A bad name, an unknown adapter or version; the message says which."""


class BrokenVersion(StoreError):
    """A version whose files cannot be served (corrupt weights, unreadable config): never put in service."""


class StoreBusy(RuntimeError):
    """Another job (in this process or another) holds the user's lock."""


def validate_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise StoreError(f"invalid {kind} name {name[:80]!r}: use 1-64 letters, digits, '_', '-', '.', '@', '+', "
                         f"starting with a letter or digit, no path separators or '..'")
    return name


@dataclass(frozen=True)
class AdapterVersion:
    user: str
    adapter: str
    version: str  # "v3"
    path: Path
    metrics: dict


def verify_adapter_folder(path: Path) -> None:
    """Raise ``BrokenVersion`` unless every adapter under ``path`` can be read whole.

    An adapter is a folder with ``adapter_config.json`` (the version folder itself, or its
    variant sub-folders); each config must be a JSON object and each ``*.safetensors`` file must
    open and yield all its tensors. Links are refused: a version is what was copied in, nothing else.
    """
    from safetensors import safe_open

    configs = [p for p in [path / "adapter_config.json", *path.glob("*/adapter_config.json")] if p.exists()]
    if not configs:
        raise BrokenVersion(f"{path.name} holds no adapter (no adapter_config.json)")
    for config in configs:
        folder = config.parent
        for item in [folder, *folder.iterdir()]:
            if item.is_symlink():
                raise BrokenVersion(f"{path.name}: {item.relative_to(path.parent)} is a symbolic link")
        try:
            meta = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise BrokenVersion(f"{path.name}: {config.name} is unreadable: {exc}") from None
        if not isinstance(meta, dict):
            raise BrokenVersion(f"{path.name}: {config.name} is not a JSON object")
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise BrokenVersion(f"{path.name}: {folder.name} has no .safetensors weights")
        for file in weights:
            try:
                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():
                        f.get_tensor(key)
            except Exception as exc:  # SafetensorError, OSError, a header that is not JSON ...
                raise BrokenVersion(f"{path.name}: {file.name} is corrupt ({type(exc).__name__}: "
                                    f"{str(exc)[:200]})") from None


class AdapterStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------------
    # Every path handed out is checked to lie inside the user's folder after resolving links,
    # and none of the store's own names (adapter, version, ``current``) may be a link: a link
    # planted in a user's folder must not lead to another user's adapters or out of the store.

    def user_dir(self, user: str) -> Path:
        path = self.root / validate_name("user", user)
        if path.is_symlink() or path.resolve().parent != self.root:  # belt and braces on top of the name check
            raise StoreError(f"user {user!r} resolves outside the adapter store")
        return path

    def _inside(self, user: str, path: Path) -> Path:
        """``path`` if it is no link and resolves inside ``user``'s folder; else ``StoreError``."""
        base = self.user_dir(user).resolve()
        if path.is_symlink() or not path.resolve().is_relative_to(base):
            raise StoreError(f"{path.name!r} of user {user!r} leads out of their folder; refused")
        return path

    def _adapter_dir(self, user: str, adapter: str) -> Path:
        return self._inside(user, self.user_dir(user) / validate_name("adapter", adapter))

    def staging(self, user: str) -> Path:
        """A fresh folder for a job of ``user`` to write into (removed by the caller or by ``clean``)."""
        base = self.user_dir(user) / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self._inside(user, base)))

    @contextlib.contextmanager
    def lock(self, user: str):
        """Hold ``user``'s job lock; ``StoreBusy`` at once if another job holds it.

        An advisory ``flock`` on ``<user>/.lock``: it is shared by every process using this store
        (the backend's jobs, the CLI) and released by the kernel when the holder dies, so a crashed
        job never leaves the user locked out.
        """
        folder = self.user_dir(user)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:  # ELOOP: a link planted as the lock file
            raise StoreError(f"the lock file of user {user!r} cannot be opened: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreBusy(f"a personalize job for {user!r} is already running; wait for it or cancel it") from None
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def clean_staging(self, user: str) -> None:
        shutil.rmtree(self.user_dir(user) / ".staging", ignore_errors=True)  # rmtree never follows links

    # -- reading -------------------------------------------------------------------------------

    def versions(self, user: str, adapter: str) -> list[str]:
        folder = self._adapter_dir(user, adapter)
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in folder.iterdir()
                 if not p.is_symlink() and p.is_dir() and (m := _VERSION.fullmatch(p.name))]
        return [name for _, name in sorted(found)]

    def current(self, user: str, adapter: str) -> Optional[AdapterVersion]:
        """The version in service, or ``None`` if none was published."""
        pointer = self._adapter_dir(user, adapter) / "current"
        try:
            fd = os.open(pointer, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: ``current`` is a link
            raise StoreError(f"the 'current' pointer of {adapter!r} cannot be read: {exc.strerror}") from None
        with os.fdopen(fd) as f:
            version = f.read(64).strip()
        return self._version(user, adapter, version)

    def _version(self, user: str, adapter: str, version: str) -> AdapterVersion:
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise StoreError(f"invalid version {str(version)[:40]!r} for adapter {adapter!r}")
        path = self._adapter_dir(user, adapter) / version
        if not path.is_dir() or path.is_symlink():
            raise StoreError(f"user {user!r} has no version {version!r} of adapter {adapter!r}")
        self._inside(user, path)
        try:
            metrics = json.loads((path / "metrics.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            metrics = {}
        if not isinstance(metrics, dict):
            metrics = {}
        return AdapterVersion(user=user, adapter=adapter, version=version, path=path, metrics=metrics)

    def list(self, user: str) -> dict[str, dict]:
        """{adapter: {"current": "v2" | None, "versions": [...]}} for this user only."""
        folder = self.user_dir(user)
        if not folder.is_dir():
            return {}
        out = {}
        for child in sorted(folder.iterdir()):
            if not child.is_symlink() and child.is_dir() and _NAME.fullmatch(child.name):
                try:
                    current = self.current(user, child.name)
                except StoreError as exc:  # one broken adapter must not hide the others
                    log.warning("%s", exc)
                    current = None
                out[child.name] = {"current": current.version if current else None,
                                   "versions": self.versions(user, child.name)}
        return out

    # -- writing -------------------------------------------------------------------------------

    def publish(self, user: str, adapter: str, source: str | Path, *, metrics: Optional[dict] = None) -> AdapterVersion:
        """Copy ``source`` in as the next version and put it in service; ``BrokenVersion`` (and
        nothing published) when the copy cannot be served."""
        folder = self._adapter_dir(user, adapter)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=folder))
        try:
            shutil.copytree(source, tmp, dirs_exist_ok=True)  # links are copied as links, then refused
            (tmp / "metrics.json").write_text(json.dumps(metrics or {}, indent=1, sort_keys=True))
            verify_adapter_folder(tmp)
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
        """Put ``to`` (default: the version before the current one) back in service.

        The target is read whole first: a corrupt version raises ``BrokenVersion`` and ``current``
        stays as it was.
        """
        current = self.current(user, adapter)
        if current is None:
            raise StoreError(f"user {user!r} has no published adapter {adapter!r} to roll back")
        if to is None:
            earlier = [v for v in self.versions(user, adapter) if int(v[1:]) < int(current.version[1:])]
            if not earlier:
                raise StoreError(f"{adapter!r} {current.version} is the first version; there is nothing to roll back to")
            to = earlier[-1]
        target = self._version(user, adapter, to)
        try:
            verify_adapter_folder(target.path)
        except BrokenVersion as exc:
            raise BrokenVersion(f"cannot roll {adapter!r} back to {to}: {exc}; {current.version} stays in service") from None
        self._point(self._adapter_dir(user, adapter), to)
        return target

    @staticmethod
    def _point(folder: Path, version: str) -> None:
        tmp = folder / f".current-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a leftover (or a planted link) goes; the new file is made exclusively
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(version)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / "current")  # replaces a link named ``current`` itself, never its target
