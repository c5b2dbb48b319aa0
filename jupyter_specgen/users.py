"""Who a request is for: the name under which the backend keeps a person's adapters and the
feedback store their suggestions.

Jupyter server's own identity providers (a shared token or password) make up a random anonymous
user per browser, or even per request (a uuid): every browser the one person who runs the server
opens would then start from nothing. Behind those providers the server has one owner, so every
request is theirs: the login name of the process. Any other provider (JupyterHub's, a custom one)
names real users, and its username is used.

The mapping from a username to its backend name is injective, so two people never share a folder:

- a *plain* name (letters, digits, ``_ . @ -``, at most 64, no ``..``) is kept as it is, so the
  data of existing users stays where it is;
- any other name becomes ``<slug>+<mac>``: a readable slug, a ``+`` (never part of a plain name,
  so an encoded name can never equal a plain one, whatever a user calls themselves) and an HMAC of
  the *exact* name under a secret of this server kept in the Jupyter data dir. Keyed, so that
  nobody can search offline for two names whose truncated digests agree.

Names with control characters, lone surrogates or line separators are refused (403): they are not
names a person types, and they are how one name passes for another in logs and folder listings.
(Names encoded before this scheme, ``<slug>-<sha256[:12]>``, are not migrated: such a key is a
plain name another user may hold, so the data under it cannot be told apart from theirs.)
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import hmac
import logging
import os
import re
import secrets
import unicodedata
from pathlib import Path
from typing import Optional

from tornado import web

__all__ = ["specgen_user", "backend_name", "check_username", "load_user_key", "default_user_key_path"]

log = logging.getLogger(__name__)

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_MAC_HEX = 20  # 80 bits of the HMAC: no collision by chance among any number of users a server has
_REFUSED_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # controls, lone surrogates, line/paragraph separators
_MAX_NAME_CHARS = 256


def default_user_key_path() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "specgen" / "user_key"


def load_user_key(path: Optional[Path] = None) -> bytes:
    """This server's secret for encoding usernames; made (0600, exclusively) on first use."""
    path = Path(path) if path is not None else default_user_key_path()
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server process made it meanwhile: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return bytes.fromhex(key)


def check_username(name: str) -> str:
    """``name`` if a person could have it; ``ValueError`` saying why not."""
    if not isinstance(name, str) or not name:
        raise ValueError("empty username")
    if len(name) > _MAX_NAME_CHARS:
        raise ValueError(f"username of {len(name)} characters (at most {_MAX_NAME_CHARS})")
    for ch in name:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise ValueError(f"username contains the control character U+{ord(ch):04X}")
    return name


def backend_name(name: str, key: bytes) -> str:
    """``name`` as the backend accepts it: unchanged when plain, else ``<slug>+<hmac>``."""
    check_username(name)
    if _PLAIN.fullmatch(name) and ".." not in name:
        return name
    slug = re.sub(r"[^A-Za-z0-9_@-]+", "-", name).strip("-")[:40] or "user"
    if not slug[0].isalnum():
        slug = f"u{slug}"[:40]
    mac = hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:_MAC_HEX]
    _note_legacy(name, slug)
    return f"{slug}+{mac}"


@functools.lru_cache(maxsize=1024)
def _note_legacy(name: str, slug: str) -> None:
    """Say once per name where its data lived before names were keyed (it is not moved)."""
    old = f"{slug}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:12]}"
    log.info("user %.80r is stored as a keyed name; data saved before under %r is not used for them", name, old)


def specgen_user(handler) -> str:
    """The backend name of the person behind an authenticated ``handler``'s request (403 for a
    username no person has)."""
    key = handler.settings["specgen"].user_key
    if type(handler.identity_provider).__module__ == "jupyter_server.auth.identity":
        try:
            owner = getpass.getuser()
        except Exception:  # no login name (a container without a passwd entry)
            owner = "owner"
        name = owner
    else:
        name = handler.current_user.username
    try:
        return backend_name(name, key)
    except ValueError as exc:
        raise web.HTTPError(403, f"refused user: {exc}") from None
