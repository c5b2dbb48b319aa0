"""Prefix caching: the KV cache of recent prompts, so that the next keystroke prefills only what changed.

Between two keystrokes the notebook above the cursor rarely changes, so consecutive prompts of a
user share a long run of leading tokens. After each batch-1 prefill the scheduler stores the
prompt's token ids and its per-layer keys/values here; the next prefill on the same key looks up
the entry with the longest common token prefix, starts from a cache cut to that length and runs
the model only on the tokens after it.

Entries are keyed by ``(user, adapter, adapter stamp)``:

- the adapter changes every key and value, so a base-model cache never serves an adapter row;
- the stamp changes when an adapter is reloaded under the same name (a new personal version), so
  the old weights' cache is never reused;
- the user keeps one user's cached prompts from speeding up (and so, by timing, revealing) another
  user's identical notebook text on a shared backend.

Stored tensors are shared, never copied: a restored cache starts with views of them, and
everything downstream (``DynamicLayer.update``'s ``torch.cat``, the scheduler's padding merge,
``index_select``, ``repeat_interleave``) builds new tensors instead of writing into old ones. Only
models whose cache is made of plain ``DynamicLayer`` are cached; sliding-window and other layer
kinds cannot be cut at an arbitrary length, and the cache stays off for them.

The bound is by entries and by bytes; the least recently used entry goes first.
"""

from __future__ import annotations

import collections
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Hashable, Optional

from .kv import layer_of

__all__ = ["PrefixCache", "cacheable", "restore"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    key: Hashable
    ids: Any  # (T,) torch.long on the CPU: the prompt's token ids
    layers: list[tuple[Any, Any]]  # per layer (keys, values), each (1, H, T, D)
    nbytes: int


class PrefixCache:
    """A bounded LRU of prompt KV caches; lookups find the longest common token prefix."""

    def __init__(self, *, max_entries: int, max_bytes: int, metrics=None):
        assert max_entries >= 0 and max_bytes >= 0, "bounds must be >= 0 (0 disables the cache)"
        self.max_entries, self.max_bytes, self.metrics = max_entries, max_bytes, metrics
        self._entries: collections.OrderedDict[int, _Entry] = collections.OrderedDict()  # least recently used first
        self._ids = itertools.count()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: Hashable, ids) -> tuple[Optional[_Entry], int]:
        """(the entry of ``key`` sharing the longest token prefix with ``ids``, that length); (None, 0) if none.

        ``ids`` is a (T,) CPU long tensor. The entry becomes the most recently used.
        """
        import torch

        best, best_len, best_slot = None, 0, None
        for slot, entry in self._entries.items():
            if entry.key != key:
                continue
            n = min(len(entry.ids), len(ids))
            differ = torch.nonzero(entry.ids[:n] != ids[:n])
            common = n if differ.numel() == 0 else int(differ[0, 0])
            if common > best_len:
                best, best_len, best_slot = entry, common, slot
        if best_slot is not None:
            self._entries.move_to_end(best_slot)
        return best, best_len

    def record(self, reused: int) -> None:
        """Count one prefill that took ``reused`` tokens from the cache (0: a miss)."""
        if reused > 0:
            self.hits += 1
            self.reused_tokens += reused
        else:
            self.misses += 1
        if self.metrics is not None:
            (self.metrics.prefix_hits if reused > 0 else self.metrics.prefix_misses).inc()
            self.metrics.prefix_reused_tokens.inc(reused)

    def store(self, key: Hashable, ids, cache, *, source: Optional[_Entry] = None, reused: int = 0) -> None:
        """Keep ``cache`` (a batch-1 ``DynamicCache`` of exactly the prompt ``ids``) under ``key``.

        ``source`` is the entry the prefill started from; when the new prompt shares at least half
        of it, it is replaced (typing extends one prompt keystroke by keystroke, and keeping every
        step would fill the cache with near copies), otherwise it stays (another notebook).
        """
        if not self.enabled or not cacheable(cache):
            return
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        assert all(k.shape[0] == 1 and k.shape[-2] == len(ids) for k, _ in layers), "store a batch-1 cache of exactly the prompt"
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if nbytes > self.max_bytes:
            return  # bigger than the whole cache: keeping it would only evict everything else
        for slot, entry in list(self._entries.items()):
            if entry.key != key:
                continue
            covered = entry is source and 2 * reused >= len(entry.ids)
            prefix_of_new = len(entry.ids) <= len(ids) and bool((entry.ids == ids[: len(entry.ids)]).all())
            if covered or prefix_of_new:
                self._drop(slot)
        self._entries[next(self._ids)] = _Entry(key=key, ids=ids, layers=layers, nbytes=nbytes)
        self.nbytes += nbytes
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._observe()

    def drop_key(self, predicate) -> None:
        """Forget every entry whose key satisfies ``predicate(key)``."""
        for slot in [s for s, e in self._entries.items() if predicate(e.key)]:
            self._drop(slot)
        self._observe()

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
        self._observe()

    def _drop(self, slot: int) -> None:
        entry = self._entries.pop(slot)
        self.nbytes -= entry.nbytes

    def _observe(self) -> None:
        if self.metrics is not None:
            self.metrics.prefix_entries.set(len(self._entries))
            self.metrics.prefix_bytes.set(self.nbytes)


def cacheable(cache) -> bool:
    """Whether ``cache`` is a ``DynamicCache`` of plain full-attention layers (cut at any length)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return (
        isinstance(cache, DynamicCache)
        and len(cache.layers) > 0
        and all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)
    )


def restore(entry: _Entry, length: int):
    """A new ``DynamicCache`` holding the first ``length`` tokens of ``entry`` (views, no copy)."""
    from transformers.cache_utils import DynamicCache

    assert 0 < length <= len(entry.ids), f"cannot restore {length} tokens of a {len(entry.ids)}-token entry"
    cache = DynamicCache()
    # Views of the stored tensors, each (1, H, length, D).
    cache.layers = [layer_of(keys[:, :, :length], values[:, :, :length]) for keys, values in entry.layers]
    return cache
