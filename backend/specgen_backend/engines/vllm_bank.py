"""The adapters registered in a vLLM server, behind the native ``AdapterBank``'s interface.

The server resolves, checks ownership of and names adapters exactly as for the native bank (keys
``<user>/<name>`` and ``shared/<name>``); this bank registers each with vLLM under a name of its
own (``specgen-<n>``, new at every load) so that a reload of ``alice/personal`` with a new version
is a new adapter to vLLM, never a stale cached one. The key is what users see; the vLLM name is
what a completion request's ``model`` field carries.

A vLLM server that restarted has forgotten every adapter: the bank is then marked stale (by the
scheduler, on a connection failure or an unknown-model answer) and registers them all again
before the next request.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..lora.bank import AdapterError
from .vllm_client import VllmClient, VllmRefused, VllmUnavailable

__all__ = ["VllmBank", "BASE_MODEL"]

log = logging.getLogger(__name__)

BASE_MODEL = "base"  # the --served-model-name of the base model (``VllmServer`` sets it)


@dataclass(frozen=True)
class _Entry:
    vllm_name: str
    path: str
    stamp: int


class VllmBank:
    """Adapter keys -> adapters registered in one vLLM server, least recently loaded first."""

    def __init__(self, client: VllmClient, *, max_adapters: int, max_rank: int):
        self.client, self.max_adapters, self.max_rank = client, max_adapters, max_rank
        self._resident: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._loads = 0
        self._stale = False

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
            entry = _Entry(vllm_name=f"specgen-{self._loads}", path=str(path), stamp=self._loads)
        self._register(entry)
        with self._lock:
            old = self._resident.pop(name, None)
            self._resident[name] = entry
            evicted = []
            while len(self._resident) > self.max_adapters:
                evicted.append(self._resident.popitem(last=False)[1])
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

    def mark_stale(self) -> None:
        """The server may have restarted: register every adapter again before the next request."""
        self._stale = True

    def refresh(self) -> None:
        """(after ``mark_stale``) Register again what a restarted server forgot; raises
        ``VllmUnavailable`` while the server is still down (the bank stays stale)."""
        if not self._stale:
            return
        known = set(self.client.models())
        with self._lock:
            entries = list(self._resident.values())
        missing = [entry for entry in entries if entry.vllm_name not in known]
        for entry in missing:
            self._register(entry)
        self._stale = False
        log.info("re-registered %d adapters with vLLM after it came back", len(missing))

    def _register(self, entry: _Entry) -> None:
        try:
            body = {"lora_name": entry.vllm_name, "lora_path": entry.path}
            self.client.call("POST", "/v1/load_lora_adapter", body, timeout=300)
        except VllmRefused as exc:
            if "already" in exc.message.lower():
                return  # registered before a reconnect: nothing to do
            raise AdapterError(f"vLLM refused the adapter in {entry.path}: {exc.message}") from exc
        except VllmUnavailable as exc:
            raise AdapterError(f"cannot load the adapter in {entry.path}: {exc}") from exc

    def _unregister(self, entry: _Entry) -> None:
        # Best effort: a server that forgot it (restarted) or is down has nothing to free.
        try:
            self.client.call("POST", "/v1/unload_lora_adapter", {"lora_name": entry.vllm_name})
        except (VllmRefused, VllmUnavailable) as exc:
            log.warning("unloading %s from vLLM failed (it may have restarted): %s", entry.vllm_name, exc)


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
