"""Put a user's published adapters into the serving bank: the versions in service, under
names that carry the user (``"alice/personal"``, ``"alice/variant-2"``), so one user's rows can
never pick up another user's adapter by name.

``sync_bank`` is what the server calls after a personalize job publishes (or after a rollback):
it (re)loads each adapter whose version in service differs from the one the bank holds. The
bank's ``load`` reloads a name in place and checks everything before touching a slot, so a
request running meanwhile sees the old version or the new one, never a mix.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .jobs import VARIANTS_ADAPTER
from .store import AdapterStore, validate_name
from .variants import variant_name

__all__ = ["bank_name", "adapters_in_service", "sync_bank"]

log = logging.getLogger(__name__)


def bank_name(user: str, adapter: str) -> str:
    return f"{validate_name('user', user)}/{adapter}"


def adapters_in_service(store: AdapterStore, user: str) -> dict[str, tuple[str, Path]]:
    """{bank name: (version, adapter folder)} for every adapter of ``user`` that is in service."""
    out: dict[str, tuple[str, Path]] = {}
    for adapter in store.list(user):
        current = store.current(user, adapter)
        if current is None:
            continue
        if adapter == VARIANTS_ADAPTER:
            k = 0
            while (current.path / variant_name(k)).is_dir():
                out[bank_name(user, variant_name(k))] = (current.version, current.path / variant_name(k))
                k += 1
        else:
            out[bank_name(user, adapter)] = (current.version, current.path)
    return out


def sync_bank(bank, store: AdapterStore, user: str, loaded: dict[str, str]) -> list[str]:
    """Load into ``bank`` what changed since ``loaded`` ({bank name: version}, updated in place).

    Returns the names (re)loaded. Names of this user that are no longer in service are unloaded.
    """
    wanted = adapters_in_service(store, user)
    changed = []
    for name, (version, path) in wanted.items():
        if loaded.get(name) != version or name not in bank.loaded():
            bank.load(name, path)
            loaded[name] = version
            changed.append(name)
    prefix = bank_name(user, "")
    for name in [n for n in loaded if n.startswith(prefix) and n not in wanted]:
        if name in bank.loaded():
            bank.unload(name)
        del loaded[name]
    if changed:
        log.info("hot-loaded %s", ", ".join(changed))
    return changed
