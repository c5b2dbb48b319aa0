"""Dispatch between the Triton kernels and the torch reference.

``backend="auto"`` uses Triton for CUDA tensors when Triton imports, and the torch reference
everywhere else. ``SPECGEN_LORA_BACKEND=triton|torch`` overrides "auto" for the whole process:
the CPU tests set it to ``triton`` together with ``TRITON_INTERPRET=1`` to run the real kernels
in Triton's interpreter.
"""

from __future__ import annotations

import functools
import logging
import os
from types import ModuleType
from typing import Literal

import torch

from . import reference
from .metadata import SegmentMetadata

__all__ = ["Backend", "resolve_backend", "lora_add", "flora_add"]

log = logging.getLogger(__name__)

Backend = Literal["auto", "triton", "torch"]
ENV_VAR = "SPECGEN_LORA_BACKEND"


@functools.cache
def _kernels() -> ModuleType | None:
    try:
        from . import kernels
    except ImportError as exc:  # no triton on this machine: the torch path serves
        log.info("Triton kernels unavailable (%s); using the torch reference", exc)
        return None
    return kernels


def resolve_backend(backend: Backend, device: torch.device) -> Literal["triton", "torch"]:
    """The backend that serves tensors on ``device`` when ``backend`` was asked for."""
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto")  # type: ignore[assignment]
        if backend not in ("auto", "triton", "torch"):
            raise ValueError(f"{ENV_VAR}={backend!r}: use 'auto', 'triton' or 'torch'")
    if backend == "auto":
        return "triton" if device.type == "cuda" and _kernels() is not None else "torch"
    if backend == "triton" and _kernels() is None:
        raise RuntimeError("backend='triton' was asked for but triton cannot be imported: pip install triton")
    return backend


def _impl(backend: Backend, device: torch.device) -> ModuleType:
    return _kernels() if resolve_backend(backend, device) == "triton" else reference  # type: ignore[return-value]


def lora_add(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scales: torch.Tensor,
    ranks: torch.Tensor,
    meta: SegmentMetadata,
    *,
    backend: Backend = "auto",
) -> None:
    """y (T, N) += scale · (x (T, K) @ A[slot]ᵀ) @ B[slot]ᵀ for every token with a slot, in place."""
    impl = _impl(backend, x.device)
    buf = impl.lora_shrink(x, lora_a, scales, ranks, meta)  # (T, R) float32
    impl.lora_expand(y, buf, lora_b, ranks, meta)


def flora_add(
    y: torch.Tensor,
    x: torch.Tensor,
    w0: torch.Tensor,
    flora_in: torch.Tensor,
    flora_out: torch.Tensor,
    scales: torch.Tensor,
    ranks: torch.Tensor,
    meta: SegmentMetadata,
    *,
    backend: Backend = "auto",
) -> None:
    """y (T, N) += the fLoRA delta of every token with a slot, in place (see ``kernels.flora_add``)."""
    _impl(backend, x.device).flora_add(y, x, w0, flora_in, flora_out, scales, ranks, meta)
