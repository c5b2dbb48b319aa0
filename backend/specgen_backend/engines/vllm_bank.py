"""The adapters registered in a vLLM server, behind the native ``AdapterBank``'s interface.

The server resolves, checks ownership of and names adapters exactly as for the native bank (keys
``<user>/<name>`` and ``shared/<name>``); this bank registers each with vLLM under a name of its
own (``specgen-<bank>-<n>``, new at every load) so that a reload of ``alice/personal`` with a new
version is a new adapter to vLLM, never a stale cached one. ``<bank>`` is random per bank: a
vLLM server outlives the backend that registered adapters with it (a restarted backend, two
backends on one server), and with names counted from 1 alone a new bank's ``specgen-1`` (bob's)
would be taken for the old one's (alice's) still registered, and bob served alice's adapter. The
key is what users see; the vLLM name is what a completion request's ``model`` field carries.

With several replicas of one model (``vllm serve`` on several hosts, the same model and adapter
folders), each user has a home replica (``home``: a rendezvous hash of the user name over the
replicas' positions, so it moves for a user only when the list changes). A user's adapters are
registered on their home alone and their requests go there: an adapter is loaded once, and a
user's requests always find it. Shared adapters (``shared/<name>``) are registered on every
replica, since any user may ask for them. ``max_adapters`` bounds what each replica holds.

A vLLM server that restarted has forgotten every adapter: the bank is then marked stale (by the
scheduler, on a connection failure or an unknown-model answer) and registers them all again
before the next request.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..lora.bank import AdapterError
from .vllm_client import VllmClient, VllmRefused, VllmUnavailable

__all__ = ["VllmBank", "BASE_MODEL", "home_of"]

log = logging.getLogger(__name__)

BASE_MODEL = "base"  # the --served-model-name of the base model (``VllmServer`` sets it)


@dataclass(frozen=True)
class _Entry:
    vllm_name: str
    path: str
    stamp: int
    homes: tuple[int, ...] = (0,)  # the replicas it is registered on


def home_of(user: str, replicas: int) -> int:
    """The replica (position) ``user``'s requests and adapters go to: the highest of a hash of
    (user, position). Adding or removing the last replica moves only the users it gains or had."""
    def weight(i: int) -> bytes:
        return hashlib.sha256(f"{user}\0{i}".encode("utf-8", "surrogatepass")).digest()

    return max(range(max(1, replicas)), key=weight)


class VllmBank:
    """Adapter keys -> adapters registered in the vLLM servers, least recently loaded first."""

    def __init__(self, clients: "VllmClient | Sequence[VllmClient]", *, max_adapters: int, max_rank: int):
        self.clients = [clients] if isinstance(clients, VllmClient) else list(clients)
        if not self.clients:
            raise ValueError("the vLLM engine needs at least one vLLM server")
        self.max_adapters, self.max_rank = max_adapters, max_rank
        self._resident: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._loads = 0
        self._prefix = secrets.token_hex(4)  # this bank's part of the vLLM names (see the module's doc)
        self._stale: set[int] = set()  # replicas that may have forgotten their adapters

    @property
    def client(self) -> VllmClient:
        """The first replica (the only one, unless the backend was given several)."""
        return self.clients[0]

    def home(self, user: str) -> int:
        return home_of(user, len(self.clients))

    def client_for(self, user: str) -> VllmClient:
        """The replica that serves ``user``'s requests."""
        return self.clients[self.home(user)]

    def _homes(self, key: str) -> tuple[int, ...]:
        owner, _, _ = key.partition("/")
        if owner == "shared":
            return tuple(range(len(self.clients)))
        return (self.home(owner),)

    def loaded(self) -> list[str]:
        """Keys of the registered adapters, least recently loaded first (the next to be evicted)."""
        with self._lock:
            return list(self._resident)

    def stamp(self, name: str) -> Optional[int]:
        entry = self._resident.get(name)
        return None if entry is None else entry.stamp

    def model_for(self, key: Optional[str]) -> str:
        """The ``model`` field of a completion request with adapter ``key`` (None: the base model)."""
        if key is None:
            return BASE_MODEL
        entry = self._resident.get(key)
        if entry is None:
            raise AdapterError(f"adapter {key!r} is not loaded")
        return entry.vllm_name

    def load(self, name: str, path: "str | os.PathLike") -> None:
        """Register the PEFT LoRA folder ``path`` as ``name`` (replacing what ``name`` was), evicting
        the least recently loaded adapter past ``max_adapters``. fLoRA adapters are refused."""
        path = Path(path)
        _check_folder(name, path, self.max_rank)
        with self._lock:
            self._loads += 1
            entry = _Entry(vllm_name=f"specgen-{self._prefix}-{self._loads}", path=str(path), stamp=self._loads,
                           homes=self._homes(name))  # fmt: skip
        self._register(entry)
        with self._lock:
            old = self._resident.pop(name, None)
            self._resident[name] = entry
            evicted = []
            for replica in entry.homes:  # past max_adapters on a replica: its least recently loaded go
                held = [k for k, e in self._resident.items() if replica in e.homes]
                for key in held[: max(0, len(held) - self.max_adapters)]:
                    evicted.append(self._resident.pop(key))
        for gone in ([old] if old is not None else []) + evicted:
            self._unregister(gone)
        log.info("registered adapter %r with vLLM as %s (from %s)", name, entry.vllm_name, path)

    def unload(self, name: str) -> None:
        with self._lock:
            entry = self._resident.pop(name, None)
        if entry is None:
            raise AdapterError(f"adapter {name!r} is not loaded (loaded: {self.loaded()})")
        self._unregister(entry)
        log.info("unregistered adapter %r (%s) from vLLM", name, entry.vllm_name)

    def mark_stale(self, replica: Optional[int] = None) -> None:
        """The server (``replica``; None: every one) may have restarted: register its adapters
        again before its next request."""
        with self._lock:
            self._stale |= set(range(len(self.clients))) if replica is None else {replica}

    def refresh(self, replica: Optional[int] = None) -> None:
        """(after ``mark_stale``) Register again what a restarted server (``replica``; None: every
        stale one) forgot; raises ``VllmUnavailable`` while it is still down (it stays stale, and
        the other replicas' users are served meanwhile)."""
        with self._lock:
            targets = sorted(self._stale if replica is None else self._stale & {replica})
            entries = list(self._resident.values())
        for index in targets:
            known = set(self.clients[index].models())
            missing = [e for e in entries if index in e.homes and e.vllm_name not in known]
            for entry in missing:
                self._register(entry, only=index)
            with self._lock:
                self._stale.discard(index)
            log.info("re-registered %d adapters with vLLM at %s after it came back", len(missing), self.clients[index].url)

    def _register(self, entry: _Entry, *, only: Optional[int] = None) -> None:
        body = {"lora_name": entry.vllm_name, "lora_path": entry.path}
        done: list[int] = []
        for replica in entry.homes if only is None else (only,):
            client = self.clients[replica]
            try:
                client.call("POST", "/v1/load_lora_adapter", body, timeout=300)
            except (VllmRefused, VllmUnavailable) as exc:
                if isinstance(exc, VllmRefused) and "already" in exc.message.lower():
                    continue  # registered before a reconnect: nothing to do
                if done:  # a shared adapter on some replicas only: on none, as the error says
                    self._unregister(dataclasses.replace(entry, homes=tuple(done)))
                if isinstance(exc, VllmRefused):
                    raise AdapterError(f"vLLM at {client.url} refused the adapter in {entry.path}: {exc.message}") from exc
                raise AdapterError(f"cannot load the adapter in {entry.path}: {exc}") from exc
            done.append(replica)

    def _unregister(self, entry: _Entry) -> None:
        # Best effort: a server that forgot it (restarted) or is down has nothing to free.
        for replica in entry.homes:
            try:
                self.clients[replica].call("POST", "/v1/unload_lora_adapter", {"lora_name": entry.vllm_name})
            except (VllmRefused, VllmUnavailable) as exc:
                log.warning("unloading %s from vLLM at %s failed (it may have restarted): %s", entry.vllm_name,
                            self.clients[replica].url, exc)  # fmt: skip


def _check_folder(name: str, path: Path, max_rank: int) -> None:
    """Refuse, with the fix, what vLLM cannot serve, before vLLM is asked (its errors say less)."""
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterError(f"cannot load adapter {name!r}: {config_file} does not exist (expected a PEFT folder)")
    try:
        meta = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot load adapter {name!r}: {config_file} is not valid JSON ({exc})") from exc
    peft_type = str(meta.get("peft_type", "")).upper()
    if peft_type == "FLORA":
        raise AdapterError(f"adapter {name!r} is an fLoRA adapter, which only the native engine serves: start the "
                           "backend with --engine native (SpecgenExtension.engine = 'native'), or train a LoRA adapter")
    if peft_type != "LORA":
        raise AdapterError(f"cannot load adapter {name!r}: peft_type {meta.get('peft_type')!r} is not LoRA; "
                           "the vLLM engine serves PEFT LoRA adapters only")
    if not (path / "adapter_model.safetensors").is_file():
        raise AdapterError(f"cannot load adapter {name!r}: {path / 'adapter_model.safetensors'} is missing; save the "
                           "adapter with save_pretrained(..., safe_serialization=True)")
    ranks = [int(meta.get("r") or 0), *(int(r) for r in (meta.get("rank_pattern") or {}).values())]
    if max(ranks) > max_rank:
        raise AdapterError(f"adapter {name!r} has rank {max(ranks)}, above this backend's --max-rank {max_rank}; "
                           "restart the backend with a larger --max-rank or retrain with a smaller rank")
