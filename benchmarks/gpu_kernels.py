"""The Triton LoRA/fLoRA kernels against the torch reference, compiled on the GPU.

The CPU tests (tests/backend/lora/test_kernels.py) run these kernels in Triton's interpreter;
this script runs the real, compiled kernels at serving shapes (decode batch 64 with 64 distinct
adapters, prefill, ranks 1-64, fp32/bf16/fp16) and at odd shapes (dims that are not multiples of
the blocks, rank-0 slots, base-model rows), and checks each against the torch reference and a
per-token float64 formula. It needs only torch and triton (no pytest: the GPU machine is bare).

    python benchmarks/gpu_kernels.py            # on a CUDA machine; exit code 1 on any mismatch
    TRITON_INTERPRET=1 python benchmarks/gpu_kernels.py --device cpu --quick   # the same checks, interpreted
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

from specgen_backend.lora import kernels, reference  # noqa: E402
from specgen_backend.lora.metadata import SegmentMetadata  # noqa: E402

# Largest |kernel - float64 formula| allowed, relative to the largest |delta| of the case.
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# (name, tokens, K, N, slots, max_rank, ranks of the first slots (the rest get max_rank))
CASES = [
    ("odd dims, rank 1", 7, 40, 24, 3, 1, [1, 1, 1]),
    ("rank 64 beside 8 and 0", 37, 96, 80, 3, 64, [64, 8, 0]),
    ("decode 64x64 r16 q_proj 0.5B", 64, 896, 896, 64, 16, []),
    ("decode 64x64 r16 down_proj 0.5B", 64, 4864, 896, 64, 16, []),
    ("decode 64x64 r16 q_proj 7B", 64, 4096, 4096, 64, 16, []),
    ("prefill 4x256 r16 gate_proj 0.5B", 1024, 896, 4864, 4, 16, []),
]
FLORA_CASES = [
    ("odd dims, rank 1", 9, 40, 24, 3, 1, [1, 1, 1]),
    ("rank 4 beside 2 and 0", 20, 72, 70, 3, 4, [4, 2, 0]),
    *[(f"decode 64x64 r{r} q_proj 0.5B", 64, 896, 896, 64, r, []) for r in (1, 2, 4, 8)],
    ("decode 64x64 r4 up_proj 0.5B", 64, 896, 4864, 64, 4, []),
]
QUICK = {"odd dims, rank 1", "rank 64 beside 8 and 0", "rank 4 beside 2 and 0"}


def _inputs(tokens, k, n, slots, max_rank, ranks, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) / shape[-1] ** 0.5).to(dtype).to(device)

    x = rnd(tokens, k)  # (T, K)
    a, b = rnd(slots, max_rank, k), rnd(slots, n, max_rank)  # (S, R, K), (S, N, R)
    scales = (torch.rand(slots, generator=g) + 0.5).to(device)  # (S,)
    rank_list = (list(ranks) + [max_rank] * slots)[:slots]
    token_slots = torch.randint(-1, slots, (tokens,), generator=g, dtype=torch.int32).to(device)  # (T,), -1: base
    meta = SegmentMetadata.from_token_slots(token_slots)
    return x, a, b, scales, torch.tensor(rank_list, dtype=torch.int32, device=device), meta


def _exact_lora(y, x, a, b, scales, ranks, meta):
    """y + s·(x Aᵀ) Bᵀ per token, in float64 on the CPU."""
    out = y.double().cpu().clone()
    slots = meta.token_slots.cpu()
    x, a, b, scales, ranks = (t.double().cpu() for t in (x, a, b, scales, ranks))
    for s in slots.unique().tolist():
        if s < 0:
            continue
        rows = (slots == s).nonzero().squeeze(1)
        r = int(ranks[s])
        out[rows] += ((x[rows] @ a[s, :r].T) * scales[s]) @ b[s, :, :r].T
    return out


def _exact_flora(y, x, w0, fin, fout, scales, ranks, meta):
    """y + s·Σ_j fout[:, j] ∘ (W0 (fin[j] ∘ x)) per token, in float64 on the CPU."""
    out = y.double().cpu().clone()
    slots = meta.token_slots.cpu()
    x, w0, fin, fout, scales, ranks = (t.double().cpu() for t in (x, w0, fin, fout, scales, ranks))
    for s in slots.unique().tolist():
        if s < 0:
            continue
        rows = (slots == s).nonzero().squeeze(1)
        for j in range(int(ranks[s])):
            out[rows] += scales[s] * fout[s, :, j] * ((fin[s, j] * x[rows]) @ w0.T)
    return out


def _error(got, want, y0) -> float:
    """max |got - want| relative to the largest delta the op added (want - y0)."""
    scale = float((want - y0.double().cpu()).abs().max())
    assert scale > 1e-6, "the case must produce visible deltas"
    return float((got.double().cpu() - want).abs().max()) / scale


def check(device: str, dtypes, quick: bool) -> list[tuple[str, str, str, float, float, bool]]:
    """(op, case, dtype, error of triton, error of torch, passed) for every case."""
    rows = []
    for dtype in dtypes:
        for seed, (name, tokens, k, n, slots, max_rank, ranks) in enumerate(CASES):
            if quick and name not in QUICK:
                continue
            x, a, b, scales, r, meta = _inputs(tokens, k, n, slots, max_rank, ranks, dtype, device, seed)
            y0 = (0.01 * torch.randn(tokens, n)).to(dtype).to(device)  # (T, N), of the deltas' size
            y_tri, y_ref = y0.clone(), y0.clone()
            kernels.lora_expand(y_tri, kernels.lora_shrink(x, a, scales, r, meta), b, r, meta)
            reference.lora_expand(y_ref, reference.lora_shrink(x, a, scales, r, meta), b, r, meta)
            want = _exact_lora(y0, x, a, b, scales, r, meta)
            base_rows = (meta.token_slots == -1)
            untouched = bool(torch.equal(y_tri[base_rows], y0[base_rows]))
            e_tri, e_ref = _error(y_tri, want, y0), _error(y_ref, want, y0)
            rows.append(("lora", name, str(dtype).removeprefix("torch."), e_tri, e_ref,
                         e_tri <= TOL[dtype] and untouched))
        for seed, (name, tokens, k, n, slots, max_rank, ranks) in enumerate(FLORA_CASES):
            if quick and name not in QUICK:
                continue
            x, fin, fout, scales, r, meta = _inputs(tokens, k, n, slots, max_rank, ranks, dtype, device, 100 + seed)
            w0 = (torch.randn(n, k) / k**0.5).to(dtype).to(device)  # (N, K)
            y0 = (0.01 * torch.randn(tokens, n)).to(dtype).to(device)
            y_tri, y_ref = y0.clone(), y0.clone()
            kernels.flora_add(y_tri, x, w0, fin, fout, scales, r, meta)
            reference.flora_add(y_ref, x, w0, fin, fout, scales, r, meta)
            want = _exact_flora(y0, x, w0, fin, fout, scales, r, meta)
            e_tri, e_ref = _error(y_tri, want, y0), _error(y_ref, want, y0)
            rows.append(("flora", name, str(dtype).removeprefix("torch."), e_tri, e_ref, e_tri <= TOL[dtype]))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", default="float32,bfloat16,float16")
    p.add_argument("--quick", action="store_true", help="only the small odd-shaped cases")
    args = p.parse_args()
    rows = check(args.device, [DTYPES[d] for d in args.dtypes.split(",")], args.quick)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"# Triton kernels vs float64 formula on {name} (error = max |diff| / max |delta|)")
    print(f"| op | case | dtype | triton error | torch error | tolerance | ok |")
    print("|---|---|---|---|---|---|---|")
    for op, case, dtype, e_tri, e_ref, ok in rows:
        print(f"| {op} | {case} | {dtype} | {e_tri:.2e} | {e_ref:.2e} | {TOL[DTYPES[dtype]]:.0e} | {'yes' if ok else 'NO'} |")
    failed = [r for r in rows if not r[-1]]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
