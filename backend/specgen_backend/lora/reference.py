"""Torch reference ops (gather + bmm) with the signatures of ``kernels.py``.

They run anywhere torch runs: the backend uses them on CPU, and the tests use them as the oracle
the Triton kernels must match. Each gathers the adapter weights of every token that carries one
(``weights[slot_of_token]``) and does one batched matmul; base-model tokens are skipped.
"""

from __future__ import annotations

import torch

from .metadata import SegmentMetadata

__all__ = ["lora_shrink", "lora_expand", "flora_add"]


def _rank_mask(ranks: torch.Tensor, slots: torch.Tensor, max_rank: int) -> torch.Tensor:
    # (A, R) bool: which rank columns each token's adapter really has (the rest is padding).
    return torch.arange(max_rank, device=ranks.device)[None, :] < ranks[slots][:, None]


def lora_shrink(
    x: torch.Tensor, lora_a: torch.Tensor, scales: torch.Tensor, ranks: torch.Tensor, meta: SegmentMetadata
) -> torch.Tensor:
    """Torch twin of ``kernels.lora_shrink``: (T, K) → (T, R) float32."""
    max_rank = lora_a.shape[1]
    out = torch.zeros(x.shape[0], max_rank, dtype=torch.float32, device=x.device)  # (T, R)
    tok = meta.active_token_ids
    if tok.numel() == 0:
        return out
    slots = meta.token_slots[tok].long()  # (A,)
    a = lora_a[slots]  # (A, R, K)
    h = torch.bmm(a, x[tok].unsqueeze(2)).squeeze(2).float()  # (A, R)
    h = h * _rank_mask(ranks, slots, max_rank) * scales[slots][:, None]
    out[tok] = h
    return out


def lora_expand(
    y: torch.Tensor, buf: torch.Tensor, lora_b: torch.Tensor, ranks: torch.Tensor, meta: SegmentMetadata
) -> None:
    """Torch twin of ``kernels.lora_expand``: y (T, N) += buf (T, R) @ B[slot]ᵀ, in place."""
    max_rank = lora_b.shape[2]
    tok = meta.active_token_ids
    if tok.numel() == 0:
        return
    slots = meta.token_slots[tok].long()
    h = (buf[tok] * _rank_mask(ranks, slots, max_rank)).to(lora_b.dtype)  # (A, R)
    delta = torch.bmm(lora_b[slots], h.unsqueeze(2)).squeeze(2)  # (A, N)
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
    tok = meta.active_token_ids
    if tok.numel() == 0:
        return
    slots = meta.token_slots[tok].long()
    mask = _rank_mask(ranks, slots, max_rank)  # (A, R)
    xs = x[tok].unsqueeze(1) * flora_in[slots]  # (A, R, K): each token scaled by each rank's input vector
    z = (xs @ w0.T).float()  # (A, R, N): R passes through the base weight
    out = flora_out[slots].float().transpose(1, 2) * mask[:, :, None]  # (A, R, N)
    delta = (z * out).sum(1) * scales[slots][:, None]  # (A, N)
    y[tok] = (y[tok].float() + delta).to(y.dtype)
