"""Triton kernels for per-row adapters: additive LoRA (shrink/expand, SGMV-style) and fLoRA.

Each ``@triton.jit`` kernel is private; the public launchers assert the dtypes, shapes and
contiguity the kernels assume and take their launch grid from a ``SegmentMetadata``. Every
launcher has a torch twin with the same signature in ``reference.py``: the tests hold the two
equal, and ``ops.py`` chooses between them.

Grid: axis 1 walks the active segments (one adapter slot each), axis 0 the blocks of
``BLOCK_M`` tokens of a segment (times the output-column blocks for expand/fLoRA). A program
reads its slot's weight tiles once for all ``BLOCK_M`` tokens it holds, which is what makes a
batch where many rows share an adapter cost little more than one row.

On a CPU, set ``TRITON_INTERPRET=1`` before ``triton`` is first imported to run these kernels in
Triton's interpreter (the CI tests do this).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .metadata import SegmentMetadata

__all__ = ["lora_shrink", "lora_expand", "flora_add"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # Triton 3.9's interpreter multiplies bf16 tiles as raw integers (numpy has no bf16), so
    # under TRITON_INTERPRET the operands go to fp32 first; compiled kernels keep native dots.
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _shrink_kernel(
    x_ptr, a_ptr, out_ptr, scales_ptr, ranks_ptr,
    sorted_ids_ptr, seg_slots_ptr, seg_starts_ptr, seg_lens_ptr,
    K,
    stride_xt, stride_as, stride_ar, stride_ot,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    seg = tl.program_id(1)
    seg_len = tl.load(seg_lens_ptr + seg)
    if pid_m * BLOCK_M >= seg_len:
        return
    slot = tl.load(seg_slots_ptr + seg).to(tl.int64)
    rank = tl.load(ranks_ptr + slot)
    if rank == 0:  # this adapter does not touch this layer; out stays zero
        return
    start = tl.load(seg_starts_ptr + seg)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < seg_len
    tok = tl.load(sorted_ids_ptr + start + offs_m, mask=m_mask, other=0).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    r_mask = offs_r < rank
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        x = tl.load(  # (BLOCK_M, BLOCK_K)
            x_ptr + tok[:, None] * stride_xt + offs_k[None, :],
            mask=m_mask[:, None] & k_mask[None, :], other=0.0,
        )  # fmt: skip
        a = tl.load(  # (BLOCK_K, BLOCK_R): A[slot]^T, padded rank rows never read
            a_ptr + slot * stride_as + offs_r[None, :] * stride_ar + offs_k[:, None],
            mask=r_mask[None, :] & k_mask[:, None], other=0.0,
        )  # fmt: skip
        acc += _dot(x, a, PRECISION, UPCAST)
    acc = acc * tl.load(scales_ptr + slot)
    tl.store(
        out_ptr + tok[:, None] * stride_ot + offs_r[None, :], acc,
        mask=m_mask[:, None] & r_mask[None, :],
    )  # fmt: skip


@triton.jit
def _expand_kernel(
    buf_ptr, b_ptr, y_ptr, ranks_ptr,
    sorted_ids_ptr, seg_slots_ptr, seg_starts_ptr, seg_lens_ptr,
    N,
    stride_buft, stride_bs, stride_bn, stride_yt,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    seg = tl.program_id(1)
    num_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_n
    pid_n = pid % num_n
    seg_len = tl.load(seg_lens_ptr + seg)
    if pid_m * BLOCK_M >= seg_len:
        return
    slot = tl.load(seg_slots_ptr + seg).to(tl.int64)
    rank = tl.load(ranks_ptr + slot)
    if rank == 0:
        return
    start = tl.load(seg_starts_ptr + seg)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < seg_len
    tok = tl.load(sorted_ids_ptr + start + offs_m, mask=m_mask, other=0).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    r_mask = offs_r < rank
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    h = tl.load(  # (BLOCK_M, BLOCK_R) fp32 shrink output
        buf_ptr + tok[:, None] * stride_buft + offs_r[None, :],
        mask=m_mask[:, None] & r_mask[None, :], other=0.0,
    )  # fmt: skip
    b = tl.load(  # (BLOCK_R, BLOCK_N): B[slot]^T
        b_ptr + slot * stride_bs + offs_n[None, :] * stride_bn + offs_r[:, None],
        mask=r_mask[:, None] & n_mask[None, :], other=0.0,
    )  # fmt: skip
    # Round the rank-r activations to the weights' dtype, as PEFT's lora_B(lora_A(x)) does.
    delta = _dot(h.to(b.dtype), b, PRECISION, UPCAST)
    y_ptrs = y_ptr + tok[:, None] * stride_yt + offs_n[None, :]
    y_mask = m_mask[:, None] & n_mask[None, :]
    y = tl.load(y_ptrs, mask=y_mask, other=0.0)
    tl.store(y_ptrs, (y.to(tl.float32) + delta).to(y.dtype), mask=y_mask)


@triton.jit
def _flora_kernel(
    x_ptr, w_ptr, in_ptr, out_ptr, y_ptr, scales_ptr, ranks_ptr,
    sorted_ids_ptr, seg_slots_ptr, seg_starts_ptr, seg_lens_ptr,
    N, K,
    stride_xt, stride_wn, stride_is, stride_ir, stride_os, stride_on, stride_yt,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    seg = tl.program_id(1)
    num_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_n
    pid_n = pid % num_n
    seg_len = tl.load(seg_lens_ptr + seg)
    if pid_m * BLOCK_M >= seg_len:
        return
    slot = tl.load(seg_slots_ptr + seg).to(tl.int64)
    rank = tl.load(ranks_ptr + slot)
    if rank == 0:
        return
    start = tl.load(seg_starts_ptr + seg)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < seg_len
    tok = tl.load(sorted_ids_ptr + start + offs_m, mask=m_mask, other=0).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # fLoRA is meant for small ranks: each rank component is one pass over W0's tile.
    for j in range(0, rank):
        acc_j = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < K
            x = tl.load(  # (BLOCK_M, BLOCK_K)
                x_ptr + tok[:, None] * stride_xt + offs_k[None, :],
                mask=m_mask[:, None] & k_mask[None, :], other=0.0,
            )  # fmt: skip
            b_in = tl.load(in_ptr + slot * stride_is + j * stride_ir + offs_k, mask=k_mask, other=0.0)  # (BLOCK_K,)
            xs = (x.to(tl.float32) * b_in[None, :].to(tl.float32)).to(x.dtype)
            w = tl.load(  # (BLOCK_K, BLOCK_N): W0^T
                w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None],
                mask=k_mask[:, None] & n_mask[None, :], other=0.0,
            )  # fmt: skip
            acc_j += _dot(xs, w, PRECISION, UPCAST)
        a_out = tl.load(out_ptr + slot * stride_os + offs_n * stride_on + j, mask=n_mask, other=0.0)  # (BLOCK_N,)
        acc += acc_j * a_out[None, :].to(tl.float32)
    acc = acc * tl.load(scales_ptr + slot)
    y_ptrs = y_ptr + tok[:, None] * stride_yt + offs_n[None, :]
    y_mask = m_mask[:, None] & n_mask[None, :]
    y = tl.load(y_ptrs, mask=y_mask, other=0.0)
    tl.store(y_ptrs, (y.to(tl.float32) + acc).to(y.dtype), mask=y_mask)


def _block_m(meta: SegmentMetadata) -> int:
    # Decode segments are a few tokens long; prefill segments hundreds. 16 is tl.dot's minimum.
    return 16 if meta.max_segment_length <= 16 else (32 if meta.max_segment_length <= 32 else 64)


def _block_r(max_rank: int) -> int:
    return max(16, triton.next_power_of_2(max_rank))


def _precision(dtype: torch.dtype) -> str:
    # fp32 adapters are compared against PEFT at 1e-4: TF32 would not hold that.
    return "ieee" if dtype == torch.float32 else "tf32"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check_common(x: torch.Tensor, scales: torch.Tensor, ranks: torch.Tensor, meta: SegmentMetadata, num_slots: int):
    assert x.dim() == 2 and x.is_contiguous(), f"x must be a contiguous (T, K) tensor, got {tuple(x.shape)}"
    assert x.dtype in _DTYPES, f"x dtype {x.dtype} is not one of {_DTYPES}"
    assert x.shape[0] == meta.num_tokens, f"x has {x.shape[0]} tokens, metadata {meta.num_tokens}"
    assert scales.dtype == torch.float32 and scales.shape == (num_slots,), "scales must be (num_slots,) float32"
    assert ranks.dtype == torch.int32 and ranks.shape == (num_slots,), "ranks must be (num_slots,) int32"
    for t in (scales, ranks, meta.sorted_token_ids, meta.segment_slots):
        assert t.device == x.device, f"all tensors must be on {x.device}, one is on {t.device}"


def lora_shrink(
    x: torch.Tensor, lora_a: torch.Tensor, scales: torch.Tensor, ranks: torch.Tensor, meta: SegmentMetadata
) -> torch.Tensor:
    """Project each token onto its adapter's rank space.

    Shapes: x (T, K); lora_a (S, R, K) (PEFT's ``lora_A.weight`` per slot, rank-padded);
    scales (S,) float32; ranks (S,) int32. Returns (T, R) float32, zero for base-model tokens.

    Semantics::

        out = torch.zeros(T, R, dtype=torch.float32)
        for t in range(T):
            s = meta.token_slots[t]
            if s >= 0:
                r = ranks[s]
                out[t, :r] = (x[t] @ lora_a[s, :r].T) * scales[s]
    """
    num_slots, max_rank, k = lora_a.shape
    _check_common(x, scales, ranks, meta, num_slots)
    assert lora_a.is_contiguous() and lora_a.dtype == x.dtype, "lora_a must be contiguous and of x's dtype"
    assert k == x.shape[1], f"lora_a has in_features {k}, x has {x.shape[1]}"
    out = torch.zeros(x.shape[0], max_rank, dtype=torch.float32, device=x.device)  # (T, R)
    if meta.num_segments == 0:
        return out
    block_m = _block_m(meta)
    grid = (triton.cdiv(meta.max_segment_length, block_m), meta.num_segments)
    _shrink_kernel[grid](
        x, lora_a, out, scales, ranks,
        meta.sorted_token_ids, meta.segment_slots, meta.segment_starts, meta.segment_lengths,
        k,
        x.stride(0), lora_a.stride(0), lora_a.stride(1), out.stride(0),
        BLOCK_M=block_m, BLOCK_R=_block_r(max_rank), BLOCK_K=64, PRECISION=_precision(x.dtype), UPCAST=_interpreting(),
    )  # fmt: skip
    return out


def lora_expand(
    y: torch.Tensor, buf: torch.Tensor, lora_b: torch.Tensor, ranks: torch.Tensor, meta: SegmentMetadata
) -> None:
    """Add each token's rank-space activations, projected by its adapter's B, to ``y`` in place.

    Shapes: y (T, N); buf (T, R) float32 from ``lora_shrink``; lora_b (S, N, R) (PEFT's
    ``lora_B.weight`` per slot, rank-padded); ranks (S,) int32.

    Semantics::

        for t in range(T):
            s = meta.token_slots[t]
            if s >= 0:
                r = ranks[s]
                y[t] += buf[t, :r].to(lora_b.dtype) @ lora_b[s, :, :r].T
    """
    num_slots, n, max_rank = lora_b.shape
    assert y.dim() == 2 and y.is_contiguous(), f"y must be a contiguous (T, N) tensor, got {tuple(y.shape)}"
    assert y.shape == (meta.num_tokens, n), f"y has shape {tuple(y.shape)}, expected ({meta.num_tokens}, {n})"
    assert buf.shape == (meta.num_tokens, max_rank) and buf.dtype == torch.float32 and buf.is_contiguous()
    assert lora_b.is_contiguous() and lora_b.dtype in _DTYPES, "lora_b must be contiguous fp32/fp16/bf16"
    assert ranks.dtype == torch.int32 and ranks.shape == (num_slots,), "ranks must be (num_slots,) int32"
    if meta.num_segments == 0:
        return
    block_m, block_n = _block_m(meta), 64
    grid = (triton.cdiv(meta.max_segment_length, block_m) * triton.cdiv(n, block_n), meta.num_segments)
    _expand_kernel[grid](
        buf, lora_b, y, ranks,
        meta.sorted_token_ids, meta.segment_slots, meta.segment_starts, meta.segment_lengths,
        n,
        buf.stride(0), lora_b.stride(0), lora_b.stride(1), y.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_R=_block_r(max_rank),
        PRECISION=_precision(lora_b.dtype), UPCAST=_interpreting(),
    )  # fmt: skip


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
    """Add the multiplicative fLoRA delta of each token's adapter to ``y`` in place.

    Shapes: y (T, N); x (T, K); w0 (N, K) the base weight; flora_in (S, R, K) (the paper's B,
    scaling inputs); flora_out (S, N, R) (the paper's A, scaling outputs); scales (S,) float32;
    ranks (S,) int32. The adapted weight of slot s is ``W0 ∘ (1 + scale · flora_out @ flora_in)``.

    Semantics::

        for t in range(T):
            s = meta.token_slots[t]
            if s >= 0:
                for j in range(ranks[s]):
                    y[t] += scales[s] * flora_out[s, :, j] * (w0 @ (flora_in[s, j] * x[t]))
    """
    num_slots, max_rank, k = flora_in.shape
    n = w0.shape[0]
    _check_common(x, scales, ranks, meta, num_slots)
    assert w0.shape == (n, k) and w0.is_contiguous() and w0.dtype == x.dtype, (
        "w0 must be contiguous (N, K) of x's dtype"
    )
    assert flora_in.is_contiguous() and flora_in.dtype == x.dtype, "flora_in must be contiguous and of x's dtype"
    assert flora_out.shape == (num_slots, n, max_rank) and flora_out.is_contiguous(), "flora_out must be (S, N, R)"
    assert y.shape == (meta.num_tokens, n) and y.is_contiguous(), f"y must be contiguous ({meta.num_tokens}, {n})"
    if meta.num_segments == 0:
        return
    block_m, block_n = _block_m(meta), 64
    grid = (triton.cdiv(meta.max_segment_length, block_m) * triton.cdiv(n, block_n), meta.num_segments)
    _flora_kernel[grid](
        x, w0, flora_in, flora_out, y, scales, ranks,
        meta.sorted_token_ids, meta.segment_slots, meta.segment_starts, meta.segment_lengths,
        n, k,
        x.stride(0), w0.stride(0), flora_in.stride(0), flora_in.stride(1),
        flora_out.stride(0), flora_out.stride(1), y.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=64, PRECISION=_precision(x.dtype), UPCAST=_interpreting(),
    )  # fmt: skip
