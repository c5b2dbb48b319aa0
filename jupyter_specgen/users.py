"""Who a request is for: the name under which the backend keeps a person's adapters and the
feedback store their suggestions.

Jupyter server's own identity providers (a shared token or password) make up a random anonymous
user per browser, or even per request (a uuid): every browser the one person who runs the server
opens would then start from nothing. Behind those providers the server has one owner, so every
request is theirs: the login name of the process. Any other provider (JupyterHub's, a custom one)
names real users, and its username is used.

Backend names are short and plain (letters, digits, ``_ . @ -``); a username with other characters
is turned into a readable slug plus a hash of the whole name, so two names never share one.
"""

from __future__ import annotations

import getpass
import hashlib
import re

__all__ = ["specgen_user", "backend_name"]

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def backend_name(name: str) -> str:
    """``name`` as the backend accepts it: unchanged when plain, else a slug and a hash."""
    if _PLAIN.match(name) and ".." not in name:
        return name
    slug = re.sub(r"[^A-Za-z0-9_@-]+", "-", name).strip("-")[:40] or "user"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}" if slug[0].isalnum() else f"u{slug}-{digest}"


def specgen_user(handler) -> str:
    """The backend name of the person behind an authenticated ``handler``'s request."""
    if type(handler.identity_provider).__module__ == "jupyter_server.auth.identity":
        try:
            owner = getpass.getuser()
        except Exception:  # no login name (a container without a passwd entry)
            owner = "owner"
        return backend_name(owner)
    return backend_name(handler.current_user.username)
