"""Per-step metadata that drives the batched adapter kernels.

One ``SegmentMetadata`` is built per forward step from the slot of every token and shared by every
wrapped layer of that step. It sorts tokens by slot so that the kernels can walk *segments*: runs
of tokens that use the same adapter slot, whose weights are then read once per block of tokens
(the SGMV idea of Punica / S-LoRA / vLLM).

Building it costs one host synchronisation (``.tolist()`` of the active slots and the longest
segment); this happens once per step, not once per layer, and buys a launch grid sized to the
work instead of to the worst case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SegmentMetadata", "NO_ADAPTER"]

NO_ADAPTER = -1  # slot of a token that runs on the plain base model (vLLM's convention)


@dataclass(frozen=True)
class SegmentMetadata:
    """Token→slot mapping and the segments of tokens sorted by slot.

    Tensors live on the device of the activations; the kernels read them in this order.
    """

    token_slots: torch.Tensor  # (T,) int32, slot of each token, NO_ADAPTER for the base model
    sorted_token_ids: torch.Tensor  # (T,) int32, token indices sorted by slot (stable)
    segment_slots: torch.Tensor  # (S,) int32, the slot of each active segment (never NO_ADAPTER)
    segment_starts: torch.Tensor  # (S,) int32, offset of each segment in sorted_token_ids
    segment_lengths: torch.Tensor  # (S,) int32, tokens in each segment
    max_segment_length: int  # longest segment: sizes the kernels' grid along tokens
    num_tokens: int  # T
    # For the torch path, which pads each segment to max_segment_length and runs one bmm:
    active_token_ids: torch.Tensor  # (A,) int64, tokens that carry an adapter, grouped by slot
    active_segment_ids: torch.Tensor  # (A,) int64, segment of each of those tokens
    active_positions: torch.Tensor  # (A,) int64, its position inside its segment

    @property
    def num_segments(self) -> int:
        """Number of distinct adapter slots in use this step (base-model tokens excluded)."""
        return int(self.segment_slots.shape[0])

    @classmethod
    def from_token_slots(cls, token_slots: torch.Tensor) -> "SegmentMetadata":
        """Build the metadata from ``token_slots`` (T,) of any integer dtype."""
        assert token_slots.dim() == 1, f"token_slots must be 1-D (T,), got shape {tuple(token_slots.shape)}"
        slots = token_slots.to(torch.int32).contiguous()
        num_tokens = int(slots.shape[0])
        # Stable so that tokens of one adapter keep their order: deterministic kernels, easy tests.
        order = torch.sort(slots, stable=True).indices.to(torch.int32)
        unique, counts = torch.unique_consecutive(slots[order.long()], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        keep = unique != NO_ADAPTER
        unique, counts, starts = unique[keep], counts[keep], starts[keep]
        lengths = counts.tolist()  # host syncs (here and the masking above) happen once per step
        max_len = max(lengths, default=0)
        skip = num_tokens - sum(lengths)  # NO_ADAPTER (-1) sorts first
        segment_ids = torch.repeat_interleave(torch.arange(len(lengths), device=slots.device), counts)
        positions = torch.arange(segment_ids.shape[0], device=slots.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        return cls(
            token_slots=slots,
            sorted_token_ids=order.contiguous(),
            segment_slots=unique.to(torch.int32).contiguous(),
            segment_starts=starts.to(torch.int32).contiguous(),
            segment_lengths=counts.to(torch.int32).contiguous(),
            max_segment_length=max_len,
            num_tokens=num_tokens,
            active_token_ids=order[skip:].long(),
            active_segment_ids=segment_ids,
            active_positions=positions.long(),
        )

    @classmethod
    def from_row_slots(cls, row_slots: torch.Tensor, tokens_per_row: int) -> "SegmentMetadata":
        """Metadata for a (B, T_row) activation whose row ``i`` uses slot ``row_slots[i]``."""
        assert row_slots.dim() == 1, f"row_slots must be 1-D (B,), got shape {tuple(row_slots.shape)}"
        return cls.from_token_slots(torch.repeat_interleave(row_slots, tokens_per_row))
