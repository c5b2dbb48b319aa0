"""The path of one completion inside the Jupyter server.

Browser ``complete`` → the kernel's specs of the names in play, rendered into the prompt as
comments (GIFT4Code style: each dataframe's schema after its defining cell, a spec block above
the cursor) → backend ``generate``, streamed back as ``chunk`` → each candidate run in a fork of
the kernel → ``done`` with the items ranked (runs cleanly > non-empty result > likelihood).

A kernel that is busy, slow or absent costs the specs or the validation, never the suggestion:
those stages have budgets and degrade to "no specs" and "not validated".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

from specgen_backend.protocol import Cell, CompletionContext

from ..backend_client import BackendClient
from ..kernel_client import KernelLinks
from ..prompt_specs import schema_after_cells, spec_block
from ..protocol import Chunk, Complete, Done, Item
from ..ranking import rank

__all__ = ["CompletionSettings", "complete"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletionSettings:
    candidates: int = 3  # samples per request; validation picks among them
    max_tokens: int = 48  # new tokens per candidate
    temperature: float = 0.4  # 0: greedy (then all candidates are the same)
    specs_budget_ms: int = 50  # time the kernel gets to describe its variables
    validate: bool = True  # run candidates in a fork of the kernel before showing them
    validate_timeout_ms: int = 2000  # wall-clock limit of each forked run
    personal: bool = True  # sample with the user's published adapters (across their variants)


async def complete(
    request: Complete,
    *,
    user: str,
    client: BackendClient,
    kernels: Optional[KernelLinks],
    settings: CompletionSettings,
    send: Callable[[Chunk], None],
) -> Done:
    """Serve one ``complete``; raises ``BackendError`` when the backend cannot."""
    kernel_id = request.kernel_id if kernels is not None else None
    context = await _grounded_context(request, kernels, kernel_id, settings)

    def on_token(candidate: int, text: str) -> None:
        send(Chunk(reply_to=request.id, candidate=candidate, text=text))

    result = await client.generate(
        user=user,
        context=context,
        n=settings.candidates,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        on_token=on_token,
        personal=settings.personal,
    )
    candidates = [c for c in result.candidates if c.text.strip()]
    texts = [c.text for c in candidates]
    verdicts: list = [None] * len(texts)
    if texts and kernel_id and settings.validate:
        verdicts = await kernels.validate(  # type: ignore[union-attr]
            kernel_id, texts, prefix=request.prefix, suffix=request.suffix, timeout_ms=settings.validate_timeout_ms
        )
    ranked = rank(texts, verdicts, [c.logprob for c in candidates])
    items = [Item(text=r.text, verdict=r.item_verdict, detail=r.detail, score=r.logprob, adapter=candidates[r.index].adapter or "")
             for r in ranked]
    return Done(reply_to=request.id, items=items, model=result.model)


async def _grounded_context(
    request: Complete, kernels: Optional[KernelLinks], kernel_id: Optional[str], settings: CompletionSettings
) -> CompletionContext:
    """The completion context with the kernel's specs rendered in, when the kernel answers."""
    cells = list(request.cells)
    plain = CompletionContext(prefix=request.prefix, suffix=request.suffix, cells=cells, active=request.active)
    if kernels is None or not kernel_id:
        return plain
    before = [c.source for c in cells[: max(request.active, 0)] if c.cell_type == "code"]
    code = "\n".join([*before, request.prefix + request.suffix])
    reply = await kernels.get_specs(kernel_id, code=code, budget_ms=settings.specs_budget_ms)
    if reply is None or not reply.specs:
        return plain
    schemas = schema_after_cells([c.source for c in cells], reply.specs, active=request.active)
    grounded = [
        Cell(cell_type=c.cell_type, source=c.source.rstrip("\n") + "\n" + schemas[i]) if i in schemas else c
        for i, c in enumerate(cells)
    ]
    return CompletionContext(
        prefix=request.prefix,
        suffix=request.suffix,
        cells=grounded,
        active=request.active,
        preamble=spec_block(reply.specs),
    )
