"""The path of one completion inside the Jupyter server.

Browser ``complete`` → ``progress(specs)``: the kernel's specs of the names in play and the names
that can follow at the cursor, asked at once (``context``) → ``progress(generating)``: backend
``generate`` with the prompt grounded in the specs and the decoder held to the cursor's names
(``Constraint``); raw ``chunk``s only when the request asked to ``stream`` → each candidate run in
a fork of the kernel as soon as it is complete (``validation``), ``progress(validating)`` and a
``shown`` for each one that held up, as soon as it did → ``done`` with every shown item ranked
(``ranking``, with the words of the notebook's intent: ``relevance``), or none and a ``summary``
of why.

Only what holds up reaches the browser: candidates that raised, timed out or crashed are never
sent. With validation off, or nothing to run them in (no kernel, no sandbox), candidates are
shown "not_validated" with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Optional, Union

from specgen_backend.prompt import mid_line
from specgen_backend.protocol import CompletionContext

from ..backend_client import BackendClient
from ..kernel_client import KernelLinks
from ..protocol import Chunk, Complete, Done, Item, Progress
from ..ranking import rank, summary
from .context import ground
from .relevance import intent_of, relevance
from .validation import Validation

__all__ = ["CompletionSettings", "complete", "accepted_before"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletionSettings:
    candidates: int = 3  # samples per request; validation picks among them
    max_tokens: int = 48  # new tokens per candidate
    # Inside a line the completion is the rest of one statement (the backend stops at its end): a
    # longer one is nearly always a weak model running on, and every token is time before the
    # first ghost text.
    max_tokens_mid_line: int = 24
    temperature: float = 0.4  # 0: greedy (then all candidates are the same)
    specs_budget_ms: int = 50  # time the kernel gets to describe its variables (and the cursor)
    kernel_specs: bool = True  # ground the prompt in the kernel's specs
    validate: bool = True  # run candidates in a fork of the kernel before showing them
    validate_timeout_ms: int = 2000  # wall-clock limit of each forked run
    personal: bool = True  # sample with the user's published adapters (across their variants)
    constrain: bool = True  # hold the identifier at the cursor to the names the live kernel has


async def complete(
    request: Complete,
    *,
    user: str,
    client: BackendClient,
    kernels: Optional[KernelLinks],
    settings: CompletionSettings,
    send: Callable[[Any], None],
    accepted: Union[Collection[str], Callable[[], Collection[str]]] = (),
) -> Done:
    """Serve one ``complete``: send its ``progress``/``shown``/``chunk`` frames with ``send`` and
    return the ``done``. ``accepted``: texts the user accepted before in this notebook (ranking
    ties). Raises ``BackendError`` when the backend cannot serve."""
    started = time.perf_counter()
    kernel_id = request.kernel_id if kernels is not None else None
    if kernel_id:
        send(Progress(reply_to=request.id, stage="specs"))
    intent = intent_of(request.prefix, _markdown_above(request))
    grounding = await ground(request, kernels, kernel_id, kernel_specs=settings.kernel_specs,
                             constrain=settings.constrain, budget_ms=settings.specs_budget_ms, intent=intent)

    grounded = time.perf_counter()
    if grounding.constraint is not None:
        log.debug("complete %s: constraint %s%s on %d names, preferred %s: %s", request.id, grounding.constraint.kind,
                  " (required)" if grounding.constraint.required else "", len(grounding.constraint.names),
                  grounding.constraint.preferred, grounding.constraint.names[:12])
    run, why_not = _runner(request, kernels, kernel_id, settings)
    validation = Validation(request_id=request.id, prefix=request.prefix, suffix=request.suffix, run=run,
                            not_run_reason=why_not, send=send)

    def on_token(candidate: int, text: str) -> None:
        if request.stream:
            send(Chunk(reply_to=request.id, candidate=candidate, text=text))

    send(Progress(reply_to=request.id, stage="generating", total=settings.candidates))
    try:
        result = await client.generate(
            user=user, context=grounding.context, n=settings.candidates, max_tokens=_max_tokens(request, settings),
            temperature=settings.temperature, on_token=on_token, personal=settings.personal,
            constraint=grounding.constraint, on_candidate=validation.submit,
        )  # fmt: skip
        for index, candidate in enumerate(result.candidates):
            validation.submit(index, candidate)  # those ``on_candidate`` already had are skipped
        entries = await validation.finish()
    finally:
        validation.cancel()

    shown = [e for e in entries if e.shown]
    ranked = rank([e.text for e in shown], [e.verdict for e in shown], [e.logprob for e in shown],
                  relevance=[relevance(e.text, intent) for e in shown], accepted=accepted)
    items = [Item(text=r.text, verdict=r.item_verdict, detail=r.detail, score=r.logprob, adapter=shown[r.index].adapter)
             for r in ranked]
    reasons = list(validation.rejected)
    for entry in entries:
        if not entry.shown:
            reasons += [entry.reason] * len(entry.indices)
    log.debug("complete %s: grounding %.0f ms (%d specs, constraint %s), first shown %s, done %.0f ms; "
              "%d shown, %d rejected", request.id, (grounded - started) * 1000, grounding.specs,
              grounding.constraint.kind if grounding.constraint else "none",
              f"{(validation.first_shown - started) * 1000:.0f} ms" if validation.first_shown else "never",
              (time.perf_counter() - started) * 1000, len(items), len(reasons))
    return Done(reply_to=request.id, items=items, model=result.model,
                summary="" if items else summary(reasons), rejected=len(reasons))


def _max_tokens(request: Complete, settings: CompletionSettings) -> int:
    """Mid-line (as the backend reads it: it stops such a completion at the end of its
    statement), the rest of a statement; else room for a few lines."""
    if mid_line(CompletionContext(prefix=request.prefix, suffix=request.suffix)):
        return min(settings.max_tokens, settings.max_tokens_mid_line)
    return settings.max_tokens


def _markdown_above(request: Complete) -> str:
    """The markdown cell just above the active one (the user's words for what comes), or ""."""
    above = request.cells[request.active - 1] if 0 < request.active <= len(request.cells) else None
    return above.source if above is not None and above.cell_type == "markdown" else ""


def _runner(request: Complete, kernels: Optional[KernelLinks], kernel_id: Optional[str],
            settings: CompletionSettings):
    """What validates a group of candidate texts, or None and why nothing will."""
    if not settings.validate:
        return None, "not validated: validation is off (SpecgenExtension.validate)"
    if kernels is None:
        return None, "not validated: the kernel extension is off (SpecgenExtension.kernel_specs)"
    if not kernel_id:
        return None, "not validated: no kernel"

    # The kernel calls a function whose body is being completed with the notebook's own calls of it.
    notebook = [request.prefix + request.suffix if i == request.active else c.source
                for i, c in enumerate(request.cells) if c.cell_type == "code"]

    async def run(texts: list[str]):
        return await kernels.validate(kernel_id, texts, prefix=request.prefix, suffix=request.suffix,
                                      timeout_ms=settings.validate_timeout_ms, notebook=notebook)

    return run, ""


def accepted_before(feedback: Any, user: str, notebook: str) -> Callable[[], list[str]]:
    """Reads the suggestions ``user`` accepted before in ``notebook`` from the feedback store,
    when called (ranking calls it only to break a tie)."""

    def read() -> list[str]:
        try:
            return [r.suggestion for r in feedback.records(user, accepted=True, limit=2000) if r.notebook == notebook]
        except Exception:  # noqa: BLE001 - a tie-break is not worth failing a completion for
            log.warning("reading accepted suggestions failed", exc_info=True)
            return []

    return read
