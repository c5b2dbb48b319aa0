"""The path of one completion inside the Jupyter server.

Browser ``complete`` → backend ``generate`` (streamed back as ``chunk``) → ``done`` with the
candidates as items, best first. Later stages (kernel specs in the prompt, forked validation,
ranking by verdict) plug in here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from specgen_backend.protocol import CompletionContext

from ..backend_client import BackendClient
from ..protocol import Chunk, Complete, Done, Item

__all__ = ["CompletionSettings", "complete"]


@dataclass(frozen=True)
class CompletionSettings:
    candidates: int = 1  # samples per request
    max_tokens: int = 48  # new tokens per candidate
    temperature: float = 0.0  # 0: greedy


async def complete(
    request: Complete,
    *,
    user: str,
    client: BackendClient,
    settings: CompletionSettings,
    send: Callable[[Chunk], None],
) -> Done:
    """Serve one ``complete``; raises ``BackendError`` when the backend cannot."""
    context = CompletionContext(
        prefix=request.prefix,
        suffix=request.suffix,
        cells=list(request.cells),
        active=request.active,
    )

    def on_token(candidate: int, text: str) -> None:
        send(Chunk(reply_to=request.id, candidate=candidate, text=text))

    result = await client.generate(
        user=user,
        context=context,
        n=settings.candidates,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        on_token=on_token,
    )
    items = [Item(text=c.text, score=c.logprob) for c in result.candidates if c.text.strip()]
    items.sort(key=lambda item: item.score, reverse=True)
    return Done(reply_to=request.id, items=items, model=result.model)
