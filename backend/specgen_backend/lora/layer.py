"""The layer wrapper: ``y = base_layer(x) + delta(x, adapter slot of each token)``.

A ``BatchedAdapterLinear`` replaces one ``nn.Linear`` of the model. It owns that layer's slice
of the adapter bank (one tensor per role, all slots stacked) and reads the per-step metadata from
the ``StepState`` it shares with every other wrapped layer and with the ``AdapterBank``. It holds
no kernel code (``ops``) and builds no metadata itself beyond asking ``StepState`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import ops
from .metadata import NO_ADAPTER, SegmentMetadata

__all__ = ["BatchedAdapterLinear", "StepState"]


@dataclass
class StepState:
    """What the current batch asks of the wrapped layers; shared by the bank and all its layers.

    ``lora_rows``/``flora_rows`` hold, per batch row, the slot of that row's adapter when it is of
    that kind, else NO_ADAPTER. ``None`` outside ``AdapterBank.rows``: every layer is the base one.
    """

    backend: ops.Backend
    lora_rows: torch.Tensor | None = None  # (B,) int32 on the model's device
    flora_rows: torch.Tensor | None = None  # (B,) int32 on the model's device
    # (B, T) of the activations → metadata: built by the first layer of a step, reused by the rest
    # of the step and by later decode steps of the same shape.
    _cache: dict[tuple[int, ...], tuple[SegmentMetadata, SegmentMetadata]] = field(default_factory=dict)

    def set_rows(self, lora_rows: torch.Tensor | None, flora_rows: torch.Tensor | None) -> None:
        self.lora_rows, self.flora_rows = lora_rows, flora_rows
        self._cache.clear()

    def metadata(self, lead_shape: tuple[int, ...]) -> tuple[SegmentMetadata, SegmentMetadata] | None:
        """(additive LoRA, fLoRA) metadata for activations of leading shape (B, T) or (B,)."""
        if self.lora_rows is None or self.flora_rows is None:
            return None
        cached = self._cache.get(lead_shape)
        if cached is not None:
            return cached
        batch = int(self.lora_rows.shape[0])
        if not lead_shape or lead_shape[0] != batch:
            raise ValueError(
                f"bank.rows() was given {batch} rows but a wrapped layer received activations of leading shape "
                f"{lead_shape}: pass one entry per row of the batch"
            )
        tokens_per_row = 1
        for d in lead_shape[1:]:
            tokens_per_row *= d
        metas = (
            SegmentMetadata.from_row_slots(self.lora_rows, tokens_per_row),
            SegmentMetadata.from_row_slots(self.flora_rows, tokens_per_row),
        )
        self._cache[lead_shape] = metas
        return metas


class BatchedAdapterLinear(nn.Module):
    """An ``nn.Linear`` plus the stacked adapter weights of every bank slot for this layer.

    Bank tensors are allocated the first time an adapter touching this layer is loaded (so layers
    no adapter targets cost no memory) and are non-persistent buffers: they follow ``.to()`` but
    never end up in the model's ``state_dict``.
    """

    def __init__(self, base_layer: nn.Linear, *, name: str, state: StepState) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.name = name  # module path in the model, as PEFT's state-dict keys spell it
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self._state = state  # shared, not a submodule
        self.register_buffer("weight_in", None, persistent=False)  # (S, R, K): lora_A / flora_in
        self.register_buffer("weight_out", None, persistent=False)  # (S, N, R): lora_B / flora_out
        self.register_buffer("scales", None, persistent=False)  # (S,) float32
        self.register_buffer("ranks", None, persistent=False)  # (S,) int32, 0 = slot absent here

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def allocate(self, *, num_slots: int, max_rank: int) -> None:
        """Create this layer's zeroed bank tensors (idempotent)."""
        if self.ranks is not None:
            return
        w = self.base_layer.weight
        self.weight_in = torch.zeros(num_slots, max_rank, self.in_features, dtype=w.dtype, device=w.device)
        self.weight_out = torch.zeros(num_slots, self.out_features, max_rank, dtype=w.dtype, device=w.device)
        self.scales = torch.zeros(num_slots, dtype=torch.float32, device=w.device)
        self.ranks = torch.zeros(num_slots, dtype=torch.int32, device=w.device)

    @torch.no_grad()
    def write_slot(self, slot: int, w_in: torch.Tensor | None, w_out: torch.Tensor | None, scale: float) -> None:
        """Put one adapter's (r, K) and (N, r) weights into ``slot``; ``None`` = absent here."""
        if w_in is None:
            if self.ranks is not None:
                self.ranks[slot] = 0
                self.scales[slot] = 0.0
            return
        r = w_in.shape[0]
        self.weight_in[slot].zero_()
        self.weight_out[slot].zero_()
        self.weight_in[slot, :r].copy_(w_in)
        self.weight_out[slot, :, :r].copy_(w_out)
        self.scales[slot] = scale
        self.ranks[slot] = r

    def memory_bytes(self) -> int:
        tensors = (self.weight_in, self.weight_out, self.scales, self.ranks)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., N)
        if self.ranks is None:
            return y
        metas = self._state.metadata(tuple(x.shape[:-1]))
        if metas is None:
            return y
        lora_meta, flora_meta = metas
        if lora_meta.num_segments == 0 and flora_meta.num_segments == 0:
            return y
        lead = y.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(self.weight_in.dtype).contiguous()  # (T, K)
        y2 = y.reshape(-1, self.out_features).contiguous()  # (T, N), updated in place
        backend = self._state.backend
        if lora_meta.num_segments:
            ops.lora_add(y2, x2, self.weight_in, self.weight_out, self.scales, self.ranks, lora_meta, backend=backend)
        if flora_meta.num_segments:
            w0 = self.base_layer.weight.contiguous()
            ops.flora_add(
                y2, x2, w0, self.weight_in, self.weight_out, self.scales, self.ranks, flora_meta, backend=backend
            )
        return y2.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, slots_allocated={self.ranks is not None}"


def no_adapter_rows(batch: int, device: torch.device) -> torch.Tensor:
    """(B,) int32 of NO_ADAPTER."""
    return torch.full((batch,), NO_ADAPTER, dtype=torch.int32, device=device)
