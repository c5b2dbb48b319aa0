"""Torch reference ops (gather + bmm) with the signatures of ``kernels.py``.

They run anywhere torch runs: the backend uses them on CPU, and the tests use them as the oracle
the Triton kernels must match. Like the kernels they work per segment: each segment's tokens are
gathered into one zero-padded block ``(S, L, K)`` (``L`` = longest segment), each segment's adapter
weights are gathered once ``(S, R, K)``, and one ``bmm`` does all segments. Gathering weights per
token instead would copy an adapter once per token, which makes prefill tens of times slower.
Base-model tokens are skipped.
"""

from __future__ import annotations

import torch

from .metadata import SegmentMetadata

__all__ = ["lora_shrink", "lora_expand", "flora_add"]


def _rank_mask(ranks: torch.Tensor, meta: SegmentMetadata, max_rank: int) -> torch.Tensor:
    # (S, R) bool: which rank columns each segment's adapter really has (the rest is padding).
    return torch.arange(max_rank, device=ranks.device)[None, :] < ranks[meta.segment_slots.long()][:, None]


def _pad(meta: SegmentMetadata, rows: torch.Tensor) -> torch.Tensor:
    # (A, D) rows grouped by segment → (S, L, D), zero where a segment is shorter than L.
    out = rows.new_zeros(meta.num_segments, meta.max_segment_length, rows.shape[1])
    out[meta.active_segment_ids, meta.active_positions] = rows
    return out


def _unpad(meta: SegmentMetadata, blocks: torch.Tensor) -> torch.Tensor:
    # (S, L, D) → (A, D) in the order of meta.active_token_ids.
    return blocks[meta.active_segment_ids, meta.active_positions]


def lora_shrink(
    x: torch.Tensor, lora_a: torch.Tensor, scales: torch.Tensor, ranks: torch.Tensor, meta: SegmentMetadata
) -> torch.Tensor:
    """Torch twin of ``kernels.lora_shrink``: (T, K) → (T, R) float32."""
    max_rank = lora_a.shape[1]
    out = torch.zeros(x.shape[0], max_rank, dtype=torch.float32, device=x.device)  # (T, R)
    if meta.num_segments == 0:
        return out
    seg_slots = meta.segment_slots.long()
    a = lora_a[seg_slots] * _rank_mask(ranks, meta, max_rank)[:, :, None]  # (S, R, K)
    h = torch.bmm(_pad(meta, x[meta.active_token_ids]), a.transpose(1, 2)).float()  # (S, L, R)
    h = h * scales[seg_slots][:, None, None]
    out[meta.active_token_ids] = _unpad(meta, h)
    return out


def lora_expand(
    y: torch.Tensor, buf: torch.Tensor, lora_b: torch.Tensor, ranks: torch.Tensor, meta: SegmentMetadata
) -> None:
    """Torch twin of ``kernels.lora_expand``: y (T, N) += buf (T, R) @ B[slot]ᵀ, in place."""
    max_rank = lora_b.shape[2]
    if meta.num_segments == 0:
        return
    tok = meta.active_token_ids
    b = lora_b[meta.segment_slots.long()] * _rank_mask(ranks, meta, max_rank)[:, None, :]  # (S, N, R)
    h = _pad(meta, buf[tok].to(lora_b.dtype))  # (S, L, R)
    delta = _unpad(meta, torch.bmm(h, b.transpose(1, 2)))  # (A, N)
    y[tok] = (y[tok].float() + delta.float()).to(y.dtype)


def flora_add(
    y: torch.Tensor,
    x: torch.Tensor,
    w0: torch.Tensor,
    flora_in: torch.Tensor,
    flora_out: torch.Tensor,
    scales: torch.Tensor,
    ranks: torch.Tensor,
    meta: SegmentMetadata,
) -> None:
    """Torch twin of ``kernels.flora_add``: y[t] += s · Σ_j out[:, j] ∘ (W0 (in[j] ∘ x[t]))."""
    max_rank = flora_in.shape[1]
    if meta.num_segments == 0:
        return
    tok = meta.active_token_ids
    seg_slots = meta.segment_slots.long()
    xs = _pad(meta, x[tok])[:, None] * flora_in[seg_slots][:, :, None, :]  # (S, R, L, K): each rank's input scaling
    z = (xs @ w0.T).float()  # (S, R, L, N): R passes through the base weight
    out = flora_out[seg_slots].float().transpose(1, 2) * _rank_mask(ranks, meta, max_rank)[:, :, None]  # (S, R, N)
    delta = (z * out[:, :, None, :]).sum(1) * scales[seg_slots][:, None, None]  # (S, L, N)
    y[tok] = (y[tok].float() + _unpad(meta, delta)).to(y.dtype)
