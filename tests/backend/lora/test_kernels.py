"""The Triton kernels against the torch reference, and the reference against a per-token loop."""

from __future__ import annotations

import pytest
import torch
from specgen_backend.lora import kernels, reference
from specgen_backend.lora.metadata import SegmentMetadata

from .conftest import DEVICE

TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}  # relative to max |delta|


def _case(*, tokens, k, n, slots, max_rank, ranks, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) / shape[-1] ** 0.5).to(dtype).to(DEVICE)

    x = rnd(tokens, k)
    a, b = rnd(slots, max_rank, k), rnd(slots, n, max_rank)
    scales = (torch.rand(slots, generator=g) + 0.5).to(DEVICE)
    token_slots = torch.randint(-1, slots, (tokens,), generator=g).to(DEVICE)
    meta = SegmentMetadata.from_token_slots(token_slots)
    return x, a, b, scales, torch.tensor(ranks, dtype=torch.int32, device=DEVICE), meta


def _loop_lora(y, x, a, b, scales, ranks, meta):
    out = y.float().clone()
    for t, s in enumerate(meta.token_slots.tolist()):
        if s >= 0:
            r = int(ranks[s])
            h = (x[t].float() @ a[s, :r].float().T) * scales[s]
            out[t] += h.to(b.dtype).float() @ b[s, :, :r].float().T
    return out


def _loop_flora(y, x, w0, fin, fout, scales, ranks, meta):
    out = y.float().clone()
    for t, s in enumerate(meta.token_slots.tolist()):
        if s >= 0:
            for j in range(int(ranks[s])):
                out[t] += scales[s] * fout[s, :, j].float() * (w0.float() @ (fin[s, j].float() * x[t].float()))
    return out


def _close(got, want, dtype):
    scale = float(want.abs().max())
    assert scale > 1e-3, "the case must produce visible outputs"
    assert float((got.float() - want.float()).abs().max()) <= TOL[dtype] * scale, (got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "tokens,k,n,max_rank,ranks",
    [
        (7, 40, 24, 1, [1, 1, 1]),  # rank 1, dims not multiples of the blocks
        (37, 96, 80, 64, [64, 8, 0]),  # rank 64 next to rank 8 and an adapter absent from the layer
        (3, 64, 64, 16, [16, 4, 2]),  # decode-sized
    ],
)
def test_lora_kernels_match_reference(tokens, k, n, max_rank, ranks, dtype):
    """Shrink+expand in Triton equal the torch gather-bmm path and a per-token loop, any rank mix."""
    x, a, b, scales, r, meta = _case(tokens=tokens, k=k, n=n, slots=3, max_rank=max_rank, ranks=ranks, dtype=dtype)
    y0 = (0.01 * torch.randn(tokens, n)).to(dtype).to(DEVICE)  # of the deltas' size, so both show
    y_tri, y_ref = y0.clone(), y0.clone()
    buf = kernels.lora_shrink(x, a, scales, r, meta)
    torch.testing.assert_close(buf, reference.lora_shrink(x, a, scales, r, meta), atol=TOL[dtype], rtol=TOL[dtype])
    kernels.lora_expand(y_tri, buf, b, r, meta)
    reference.lora_expand(y_ref, reference.lora_shrink(x, a, scales, r, meta), b, r, meta)
    want = _loop_lora(y0, x, a, b, scales, r, meta)
    _close(y_tri, want, dtype)
    _close(y_ref, want, dtype)
    base_rows = meta.token_slots == -1
    assert torch.equal(y_tri[base_rows], y0[base_rows]), "base-model rows must be left untouched"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens,k,n,max_rank,ranks", [(9, 40, 24, 1, [1, 1, 1]), (20, 72, 70, 4, [4, 2, 0])])
def test_flora_kernel_matches_reference(tokens, k, n, max_rank, ranks, dtype):
    """The fLoRA kernel equals the torch reference and the per-token formula Σ_j a_j ∘ (W0 (b_j ∘ x))."""
    x, fin, fout, scales, r, meta = _case(tokens=tokens, k=k, n=n, slots=3, max_rank=max_rank, ranks=ranks, dtype=dtype)
    w0 = (torch.randn(n, k) / k**0.5).to(dtype).to(DEVICE)
    y0 = (0.01 * torch.randn(tokens, n)).to(dtype).to(DEVICE)  # of the deltas' size, so both show
    y_tri, y_ref = y0.clone(), y0.clone()
    kernels.flora_add(y_tri, x, w0, fin, fout, scales, r, meta)
    reference.flora_add(y_ref, x, w0, fin, fout, scales, r, meta)
    want = _loop_flora(y0, x, w0, fin, fout, scales, r, meta)
    _close(y_tri, want, dtype)
    _close(y_ref, want, dtype)


@pytest.mark.parametrize("impl", [kernels, reference], ids=["triton", "torch"])
def test_empty_and_all_base_batches_are_noops(impl):
    """Zero tokens, or only base-model tokens, leave y unchanged and launch nothing that fails."""
    for slots in (torch.zeros(0, dtype=torch.int32), torch.full((5,), -1, dtype=torch.int32)):
        meta = SegmentMetadata.from_token_slots(slots.to(DEVICE))
        t = slots.shape[0]
        x, y = torch.randn(t, 32, device=DEVICE), torch.randn(t, 16, device=DEVICE)
        y0 = y.clone()
        a, b, w0 = (
            torch.randn(2, 16, 32, device=DEVICE),
            torch.randn(2, 16, 16, device=DEVICE),
            torch.randn(16, 32, device=DEVICE),
        )
        sc, rk = torch.ones(2, device=DEVICE), torch.full((2,), 16, dtype=torch.int32, device=DEVICE)
        impl.lora_expand(y, impl.lora_shrink(x, a, sc, rk, meta), b, rk, meta)
        impl.flora_add(y, x, w0, a, b.transpose(1, 2).contiguous(), sc, rk, meta)
        assert torch.equal(y, y0)


def test_launcher_rejects_mismatched_dtypes():
    """A launcher refuses weights whose dtype differs from the activations' instead of misreading memory."""
    meta = SegmentMetadata.from_token_slots(torch.zeros(2, dtype=torch.int32, device=DEVICE))
    x = torch.randn(2, 32, device=DEVICE)
    a = torch.randn(1, 16, 32, device=DEVICE, dtype=torch.bfloat16)
    with pytest.raises(AssertionError, match="dtype"):
        kernels.lora_shrink(x, a, torch.ones(1, device=DEVICE), torch.ones(1, dtype=torch.int32, device=DEVICE), meta)
