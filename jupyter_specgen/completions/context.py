"""What the live kernel knows, for one completion: specs for the prompt, names for the decoder.

Two questions go to the kernel at once (``asyncio.gather``), each within its own time budget:
the specs of the names in play (rendered into the prompt GIFT4Code style: each dataframe's
schema after its defining cell, a spec block above the cursor) and the names that can follow at
the cursor (attributes after ``expr.``, column labels after ``df[``, parameter names inside a
call, the namespace at the start of an expression), which become the backend's ``Constraint``.

A kernel that is busy, slow or absent costs the specs or the constraint, never the suggestion.
Work the kernel link is doing when a budget runs out goes on (it is shielded), so the next
keystroke finds the link made and the specs cached (``KernelLink`` caches them per name until a
cell runs: a keystroke that refers to the same names does not ask the kernel again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from specgen_backend.protocol import Cell, CompletionContext, Constraint

from ..kernel.messages import CursorReply, Spec
from ..kernel_client import KernelLinks
from ..prompt_specs import schema_after_cells, spec_block
from ..protocol import Complete
from .relevance import Intent, relevance

__all__ = ["Grounding", "ground", "grounded_context", "constraint_from_cursor", "preferred_heads"]

log = logging.getLogger(__name__)

# Beyond its budget, a kernel question gets this much more for the round trip.
_SLACK_S = 0.3
# More heads than this named equally well by the notebook's words: none is preferred.
MAX_PREFERRED = 8


@dataclass(frozen=True)
class Grounding:
    context: CompletionContext
    constraint: Optional[Constraint] = None  # None: decode freely
    specs: int = 0  # how many specs went into the prompt
    cursor: Optional[CursorReply] = None  # the kernel's answer about the cursor, as it came


async def ground(request: Complete, kernels: Optional[KernelLinks], kernel_id: Optional[str], *,
                 kernel_specs: bool, constrain: bool, budget_ms: int, intent: Optional[Intent] = None) -> Grounding:
    """The context with the kernel's specs rendered in, and the constraint at the cursor."""
    cells = list(request.cells)
    plain = CompletionContext(prefix=request.prefix, suffix=request.suffix, cells=cells, active=request.active)
    if kernels is None or not kernel_id:
        return Grounding(context=plain)
    before = [c.source for c in cells[: max(request.active, 0)] if c.cell_type == "code"]
    code = "\n".join([*before, request.prefix + request.suffix])
    timeout = budget_ms / 1000 + _SLACK_S

    async def specs():
        if not kernel_specs:
            return None
        return await _bounded(kernels.get_specs(kernel_id, code=code, budget_ms=budget_ms), timeout)

    async def cursor():
        if not constrain:
            return None
        notebook = [request.prefix + request.suffix if i == request.active else c.source
                    for i, c in enumerate(cells) if c.cell_type == "code"]
        return await _bounded(kernels.cursor(kernel_id, request.prefix, request.suffix, notebook=notebook,
                                             budget_ms=budget_ms), timeout)

    reply, at_cursor = await asyncio.gather(specs(), cursor())
    constraint = constraint_from_cursor(at_cursor, intent) if at_cursor is not None else None
    if reply is None or not reply.specs:
        return Grounding(context=plain, constraint=constraint, cursor=at_cursor)
    context = grounded_context(plain, reply.specs)
    return Grounding(context=context, constraint=constraint, specs=len(reply.specs), cursor=at_cursor)


def grounded_context(context: CompletionContext, specs: Sequence[Spec]) -> CompletionContext:
    """``context`` with ``specs`` rendered in: each dataframe's schema after its defining cell,
    the spec block above the cursor. The one rendering of specs into a prompt: the embedded
    model's training data (``tools/executed_corpus.py``) is rendered by this function too."""
    cells = list(context.cells)
    schemas = schema_after_cells([c.source for c in cells], specs, active=context.active)
    grounded = [
        Cell(cell_type=c.cell_type, source=c.source.rstrip("\n") + "\n" + schemas[i]) if i in schemas else c
        for i, c in enumerate(cells)
    ]
    return CompletionContext(prefix=context.prefix, suffix=context.suffix, cells=grounded, active=context.active,
                             preamble=spec_block(specs))


def constraint_from_cursor(reply: Optional[CursorReply], intent: Optional[Intent] = None) -> Optional[Constraint]:
    """The backend ``Constraint`` for the kernel's answer about the cursor; None when there is
    nothing to hold the decoder to (no names, or the cursor is not at an identifier). With the
    notebook's ``intent``, ``preferred`` are the heads it names best (of a required head, and of
    an optional label or keyword)."""
    if reply is None:
        return None
    if not reply.names or reply.kind not in ("attribute", "column", "parameter", "name"):
        return None  # kind "": the kernel found nothing to hold the cursor to (``reply.note`` says why)
    # Where a head is optional, a label or a keyword the words name is still worth one row (the
    # backend steers only that row); not a bare name (a variable, a builtin): the words name
    # one that runs and means nothing in that place (``per_country`` inside its own
    # ``per_country = cities.groupby(``) as often as the right one.
    steerable = reply.names if reply.required else [n for n in reply.names if _label_or_keyword(n)]
    preferred = preferred_heads(steerable, intent) if intent is not None else []
    return Constraint(kind=reply.kind, names=list(reply.names), typed=reply.typed, required=reply.required,
                      preferred=preferred)


def _label_or_keyword(head: str) -> bool:
    """A column label or dict key as a literal (``'units'``, ``3``), or a keyword (``by=``)."""
    return bool(head) and (head[0] in "'\"0123456789-(" or head.endswith("="))


def preferred_heads(names: Sequence[str], intent: Intent, *, most: int = MAX_PREFERRED) -> list[str]:
    """The heads whose words the intent names most (``relevance``), none when no head is named or
    when more than ``most`` tie: words that fit that many heads tell none of them apart."""
    scores = [relevance(name, intent) for name in names]
    best = max(scores, default=0)
    if best <= 0:
        return []
    preferred = [name for name, score in zip(names, scores) if score == best]
    return preferred if len(preferred) <= most else []


async def _bounded(awaitable, timeout_s: float):
    """``awaitable``'s result, or None after ``timeout_s`` (the work itself goes on, shielded)."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except asyncio.TimeoutError:
        task.add_done_callback(_quiet)
        log.debug("the kernel did not answer within %.0f ms", timeout_s * 1000)
        return None
    except Exception:  # noqa: BLE001 - the kernel costs the grounding, never the suggestion
        log.warning("asking the kernel failed", exc_info=True)
        return None


def _quiet(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("late kernel answer failed", exc_info=task.exception())
