"""SegmentMetadata: tokens sorted by slot into segments, base-model tokens left out."""

import torch
from specgen_backend.lora.metadata import SegmentMetadata


def test_segments_group_tokens_by_slot_in_order():
    """Each active slot gets one segment listing its tokens in their original order."""
    meta = SegmentMetadata.from_token_slots(torch.tensor([2, -1, 0, 2, 0, -1, 2]))
    assert meta.segment_slots.tolist() == [0, 2]
    assert meta.segment_lengths.tolist() == [2, 3]
    ids = meta.sorted_token_ids.tolist()
    starts = meta.segment_starts.tolist()
    assert ids[starts[0] : starts[0] + 2] == [2, 4]
    assert ids[starts[1] : starts[1] + 3] == [0, 3, 6]
    assert meta.max_segment_length == 3
    assert meta.active_token_ids.tolist() == [2, 4, 0, 3, 6]
    assert meta.active_segment_ids.tolist() == [0, 0, 1, 1, 1]
    assert meta.active_positions.tolist() == [0, 1, 0, 1, 2]


def test_empty_and_base_only():
    """No tokens, or only base-model tokens, give zero segments."""
    for slots in (torch.zeros(0, dtype=torch.int64), torch.full((4,), -1)):
        meta = SegmentMetadata.from_token_slots(slots)
        assert meta.num_segments == 0 and meta.max_segment_length == 0
        assert meta.active_token_ids.numel() == 0


def test_row_slots_expand_to_tokens():
    """Row slots repeat over each row's tokens."""
    meta = SegmentMetadata.from_row_slots(torch.tensor([1, -1, 0]), tokens_per_row=2)
    assert meta.token_slots.tolist() == [1, 1, -1, -1, 0, 0]
    assert meta.segment_slots.tolist() == [0, 1]
