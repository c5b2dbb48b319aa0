"""Decoding into spare room (``kv_room.py``): the same logits as the copying cache, and the
tensors it was handed (the prefix cache's) never written to."""

from __future__ import annotations

from typing import Optional

import pytest
from specgen_backend.kv import cache_kwargs, output_cache

PROMPT = [5, 17, 42, 99, 7, 64, 23, 11, 80, 3]
ROWS = 3


@pytest.fixture(scope="module")
def model(tiny_model):
    from specgen_backend.loading import load_model

    return load_model(tiny_model, device="cpu", dtype="float32").model


def _decode(model, steps: int, *, roomy: bool, rows: int = ROWS, drop_at: Optional[int] = None):
    """Greedy decoding of ``rows`` rows after ``PROMPT``: (the logits of every step (steps, rows
    kept at the end, V), the cache, the prefill's own (keys, values) per layer). At step
    ``drop_at`` the last row leaves, as ``Scheduler._select`` drops it (new tensors set)."""
    import torch

    from specgen_backend.kv_room import with_room

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([PROMPT]), use_cache=True)
        cache = output_cache(out)
        prefilled = [(layer.keys, layer.values) for layer in cache.layers]
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        mask = torch.ones(rows, len(PROMPT), dtype=torch.long)
        token = out.logits[:, -1].argmax(-1).repeat(rows)
        kept = rows - 1 if drop_at is not None else rows
        logits = []
        for step in range(steps):
            if step == drop_at:
                index = torch.arange(kept)
                mask, token = mask[index], token[index]
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
            if roomy:
                with_room(cache)  # as Scheduler._decode does before each step
            positions = mask.sum(dim=1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(positions)], dim=1)
            out = model(input_ids=token.view(-1, 1), attention_mask=mask, position_ids=positions, use_cache=True,
                        **cache_kwargs(model, cache))  # fmt: skip
            cache = output_cache(out)
            token = out.logits[:, -1].argmax(-1)
            logits.append(out.logits[:kept, -1])
    return torch.stack(logits), cache, prefilled


def test_decoding_into_room_gives_the_logits_of_the_copying_cache(model):
    """More steps than the room holds (it grows once): logits equal to the plain DynamicLayer's."""
    import torch

    from specgen_backend.kv_room import ROOM_TOKENS, RoomyLayer

    steps = ROOM_TOKENS + 5
    plain, _, _ = _decode(model, steps, roomy=False)
    roomy, cache, _ = _decode(model, steps, roomy=True)
    assert all(type(layer) is RoomyLayer for layer in cache.layers)
    assert cache.layers[0].keys.shape[-2] == len(PROMPT) + steps
    assert torch.equal(plain, roomy)


def test_tensors_set_by_others_are_taken_in_not_written_to(model):
    """A cache whose tensors the scheduler replaced (a row dropped) decodes on from the new ones,
    with the logits the copying cache gives after the same drop."""
    import torch

    plain, _, _ = _decode(model, 8, roomy=False, drop_at=4)
    roomy, cache, _ = _decode(model, 8, roomy=True, drop_at=4)
    assert torch.equal(plain, roomy)
    assert cache.layers[0].keys.shape[0] == ROWS - 1


def test_the_prompts_own_tensors_are_never_written_to(model):
    """One row decoding straight from the prefill's cache (what the prefix cache stored): the
    stored keys and values are the same tensors, unchanged, after the decode."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([PROMPT]), use_cache=True)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in output_cache(out).layers]
    _, cache, prefilled = _decode(model, 6, roomy=True, rows=1)
    assert cache.layers[0].keys.shape[-2] == len(PROMPT) + 6
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(prefilled, before))
