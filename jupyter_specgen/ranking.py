"""Order candidates: runs cleanly > matches expectations > model likelihood. Pure.

"Runs cleanly": the fork ran it to the end and no guard had to refuse anything. "Matches
expectations": the cell produced something non-empty (a value that is not None, an empty
frame, an empty container; or it assigned names). Ties are broken by the model's
log-probability, then by the original order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Optional

from .kernel.messages import Spec, Verdict

__all__ = ["Ranked", "rank", "item_verdict"]

# Lower is better. Unvalidated candidates come after clean runs and before failures: nothing
# is known against them.
_STATUS_ORDER = {"ran": 0, "not_validated": 2, "raised": 3, "timeout": 3, "crashed": 3}


@dataclass(frozen=True)
class Ranked:
    index: int  # position in the input
    text: str
    logprob: float
    verdict: Optional[Verdict]
    item_verdict: Literal["ran", "raised", "not_validated"]  # as the browser protocol's Item has it
    detail: str  # e.g. "KeyError: 'price' (line 2)"


def rank(texts: Sequence[str], verdicts: Sequence[Optional[Verdict]], logprobs: Sequence[float], *,
         dedupe: bool = True) -> list[Ranked]:
    """Candidates best first. ``verdicts[i]`` may be None (not validated). With ``dedupe``,
    candidates whose text differs only in trailing whitespace keep their best-ranked copy."""
    if not (len(texts) == len(verdicts) == len(logprobs)):
        raise ValueError(f"rank needs one verdict and one logprob per text, got {len(texts)} texts, "
                         f"{len(verdicts)} verdicts, {len(logprobs)} logprobs")
    order = sorted(range(len(texts)), key=lambda i: (*_key(verdicts[i]), -float(logprobs[i]), i))
    seen: set[str] = set()
    ranked = []
    for i in order:
        key = texts[i].rstrip()
        if dedupe and key in seen:
            continue
        seen.add(key)
        status, detail = item_verdict(verdicts[i])
        ranked.append(Ranked(index=i, text=texts[i], logprob=float(logprobs[i]), verdict=verdicts[i],
                             item_verdict=status, detail=detail))
    return ranked


def item_verdict(verdict: Optional[Verdict]) -> tuple[Literal["ran", "raised", "not_validated"], str]:
    """The browser's three-valued verdict and a one-line detail."""
    if verdict is None or verdict.status == "not_validated":
        return "not_validated", verdict.message if verdict else ""
    if verdict.status == "ran":
        return "ran", ("refused: " + verdict.refused[0]) if verdict.refused else ""
    if verdict.status == "raised":
        where = f" (line {verdict.line})" if verdict.line else ""
        return "raised", f"{verdict.error_type}: {verdict.message}{where}" if verdict.message else verdict.error_type
    return "raised", f"{verdict.status}: {verdict.message}"


def _key(verdict: Optional[Verdict]) -> tuple[int, int]:
    if verdict is None:
        return _STATUS_ORDER["not_validated"], 1
    status = _STATUS_ORDER.get(verdict.status, 3)
    if verdict.status == "ran" and verdict.refused:
        status = 1  # ran, but only because it caught a refusal
    return status, 0 if _non_empty(verdict) else 1


def _non_empty(verdict: Verdict) -> bool:
    if verdict.value is not None:
        return not _empty(verdict.value)
    return bool(verdict.assigned) and not all(_empty(s) for s in verdict.assigned)


def _empty(spec: Spec) -> bool:
    if spec.type == "NoneType":
        return True
    if spec.shape and 0 in spec.shape:
        return True
    return spec.length == 0
