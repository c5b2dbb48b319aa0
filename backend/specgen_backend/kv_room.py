"""A KV cache layer that decodes into spare room instead of copying the cache at every token.

``DynamicLayer.update`` concatenates: each decoded token copies every layer's keys and values of
every row. With 3 rows after an 800-token prompt that copying was a third of a decode step of the
embedded model on a CPU (``aten::cat`` 31% in a torch profile; ``benchmarks/bench_decode.py``
measures the step both ways). A ``RoomyLayer`` keeps its keys and values as views into buffers
with ``ROOM_TOKENS`` of spare room: a token is written into the room after the last one, and the
cache is copied only when the room runs out or when someone else has set ``keys``/``values``.

The scheduler's merge and row selection, ``batch_repeat_interleave`` and ``crop`` all set new
tensors; the layer sees that (its views are no longer the ones it handed out) and takes the new
tensors into new buffers at its next update. Tensors a layer was handed are never written to:
the prefix cache keeps those of the prompt.

This module imports transformers (and torch) when it is imported: the scheduler imports it in
its model thread, where both are loaded already.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["ROOM_TOKENS", "RoomyLayer", "with_room"]

# Tokens of spare room a layer takes when it (re)allocates: a completion is at most a few dozen
# tokens, so a request seldom grows its buffers a second time.
ROOM_TOKENS = 64


class RoomyLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` (B, H, T, D) are views of buffers (B, H, T + room, D)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.is_initialized, self.device = True, keys.device
        self.keys, self.values = keys, values
        # The buffers and the views of them last handed out (held, so that ``is`` can tell them
        # from tensors set since: an id could be reused once a view is freed).
        self._room: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        length, new = self.keys.shape[-2], key_states.shape[-2]
        room = self._room
        if room is not None and room[2] is self.keys and room[3] is self.values and length + new <= room[0].shape[-2]:
            keys, values = room[0], room[1]
        else:
            keys, values = _buffer(key_states, length + new + ROOM_TOKENS), _buffer(value_states, length + new + ROOM_TOKENS)
            keys[:, :, :length] = self.keys
            values[:, :, :length] = self.values
        keys[:, :, length : length + new] = key_states
        values[:, :, length : length + new] = value_states
        self.keys, self.values = keys[:, :, : length + new], values[:, :, : length + new]
        self._room = (keys, values, self.keys, self.values)
        return self.keys, self.values


def with_room(cache):
    """``cache`` with each of its plain, filled ``DynamicLayer``s replaced by a ``RoomyLayer`` (in
    place; other kinds, such as sliding-window layers, stay as they are). Returns ``cache``."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized:
            cache.layers[i] = RoomyLayer(layer.keys, layer.values)
    return cache


def _buffer(like: torch.Tensor, capacity: int) -> torch.Tensor:
    batch, heads, _, dim = like.shape
    return torch.empty(batch, heads, capacity, dim, dtype=like.dtype, device=like.device)
