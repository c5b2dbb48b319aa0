"""Which candidates are worth showing, and in which order. Pure.

Only what holds up is shown: a verdict of "ran", "incomplete" (an unfinished statement whose
finished part ran), "defined" (a function body defined but not exercised) or "not_validated"
(nothing was run: validation off, no sandbox, no kernel; the item says why). "raised", "timeout"
and "crashed" are never shown; ``summary`` says in words why nothing was.

Order: ran > incomplete > defined > not_validated. Among those that ran, a run that did not need
a guard to refuse anything comes first, then one whose result looks meaningful (a value that is
not None and not empty, names assigned to non-empty values, or printed output), then the one
whose names the notebook's intent names most (``completions/relevance.py``), then the model's
log-likelihood; ties go to the shorter text, then to a text the user accepted before in this
notebook, then to the original order. Duplicates (equal after normalising whitespace) keep their
best-ranked copy.
"""

from __future__ import annotations

import io
import tokenize
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal, Optional, Union

from .kernel.messages import Spec, Verdict

__all__ = ["Ranked", "Judgement", "judge", "rank", "normalise", "summary", "meaningful", "SHOWN"]

ItemVerdict = Literal["ran", "incomplete", "defined", "not_validated"]

# Verdict statuses that are shown, best first (lower is better).
SHOWN: dict[str, int] = {"ran": 0, "incomplete": 1, "defined": 2, "not_validated": 3}


@dataclass(frozen=True)
class Judgement:
    """Whether a candidate is shown, as what, and why in words."""

    shown: bool
    verdict: Optional[ItemVerdict]  # the browser's verdict when shown, else None
    detail: str  # shown: the item's detail; not shown: the reason, as ``summary`` groups it


@dataclass(frozen=True)
class Ranked:
    index: int  # position in the input
    text: str
    logprob: float
    verdict: Optional[Verdict]
    item_verdict: ItemVerdict  # as the browser protocol's Item has it
    detail: str  # e.g. "refused: open x.txt 'w'" or why it was not validated


def normalise(text: str) -> str:
    """What "duplicate" means: the Python tokens of ``text`` one space apart (so ``f( x )`` and
    ``f(x)`` are one candidate, and so are texts that differ in trailing blank lines); block
    structure and string contents are kept. Text the tokenizer cannot read (an unterminated
    string, from where it starts): runs of whitespace made one space, so that two texts that
    differ only after the tokenizer stopped stay two candidates."""
    source = text.strip()
    tokens: list[str] = []
    end = (1, 0)  # (row, col) where the last token read ended
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            end = tok.end
            if tok.type in (tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER):
                continue
            tokens.append({tokenize.NEWLINE: "\n", tokenize.INDENT: ">", tokenize.DEDENT: "<"}.get(tok.type, tok.string))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        lines = source.splitlines(keepends=True)
        rest = source[sum(len(line) for line in lines[: end[0] - 1]) + end[1]:]
        if rest.strip():
            tokens.append(" ".join(rest.split()))
    while tokens and tokens[-1] in ("\n", "<"):
        tokens.pop()
    return " ".join(tokens)


def judge(verdict: Optional[Verdict]) -> Judgement:
    """Shown or not, and the one-line detail. ``None`` means nothing was run."""
    if verdict is None:
        return Judgement(True, "not_validated", "not validated")
    status = verdict.status
    if status == "not_validated":
        return Judgement(True, "not_validated", verdict.message or "not validated")
    if status == "ran":
        return Judgement(True, "ran", ("refused: " + verdict.refused[0]) if verdict.refused else "")
    if status in ("incomplete", "defined"):
        return Judgement(True, status, verdict.message)  # type: ignore[arg-type]
    if status == "raised":
        what = f"{verdict.error_type}: {verdict.message}" if verdict.message else (verdict.error_type or "an error")
        return Judgement(False, None, f"raised {what}")
    if status == "timeout":
        return Judgement(False, None, "timed out")
    if status == "crashed":
        return Judgement(False, None, f"crashed ({verdict.message})" if verdict.message else "crashed")
    return Judgement(False, None, f"{status}: {verdict.message}" if verdict.message else status)


def rank(
    texts: Sequence[str],
    verdicts: Sequence[Optional[Verdict]],
    logprobs: Sequence[float],
    *,
    relevance: Optional[Sequence[int]] = None,
    accepted: Union[Collection[str], Callable[[], Collection[str]]] = (),
) -> list[Ranked]:
    """The candidates worth showing, best first, duplicates merged. ``verdicts[i]`` may be None
    (not validated). ``relevance[i]``: how many words of the notebook's intent text ``i`` names
    (``completions/relevance.py``; more is better, after the verdict, before the likelihood).
    ``accepted``: texts the user accepted before in this notebook (or a function giving them,
    called only when a tie needs it: it may read a database)."""
    if not (len(texts) == len(verdicts) == len(logprobs)):
        raise ValueError(f"rank needs one verdict and one logprob per text, got {len(texts)} texts, "
                         f"{len(verdicts)} verdicts, {len(logprobs)} logprobs")
    if relevance is not None and len(relevance) != len(texts):
        raise ValueError(f"rank needs one relevance per text, got {len(relevance)} for {len(texts)} texts")
    judged = [judge(v) for v in verdicts]
    keep = [i for i in range(len(texts)) if judged[i].shown]
    primary = {i: (*_tier(verdicts[i], judged[i]), -(relevance[i] if relevance else 0), -float(logprobs[i]),
                   len(normalise(texts[i]))) for i in keep}
    ties = Counter(primary.values())
    seen_accepted: Optional[set[str]] = None
    if any(n > 1 for n in ties.values()):
        seen_accepted = {normalise(t) for t in (accepted() if callable(accepted) else accepted)}

    def key(i: int) -> tuple:
        liked = 0 if seen_accepted and normalise(texts[i]) in seen_accepted else 1
        return (*primary[i], liked, i)

    ranked: list[Ranked] = []
    seen: set[str] = set()
    for i in sorted(keep, key=key):
        norm = normalise(texts[i])
        if norm in seen:
            continue
        seen.add(norm)
        ranked.append(Ranked(index=i, text=texts[i], logprob=float(logprobs[i]), verdict=verdicts[i],
                             item_verdict=judged[i].verdict or "not_validated", detail=judged[i].detail))
    return ranked


def summary(reasons: Sequence[str]) -> str:
    """Why nothing is shown, in words: ``reasons`` (one per rejected candidate) grouped, most
    frequent first: "no suggestion: 3 candidates raised NameError: name 's' is not defined"."""
    if not reasons:
        return "no suggestion: the model produced no candidate"
    parts = []
    for reason, n in Counter(reasons).most_common():
        if n != 1 and reason.startswith("was "):
            reason = "were " + reason[4:]
        parts.append(f"{n} candidate{'s' if n != 1 else ''} {reason}")
    return "no suggestion: " + "; ".join(parts)


def _tier(verdict: Optional[Verdict], judged: Judgement) -> tuple[int, int, int]:
    """(verdict tier, refusals, meaningful): lower is better."""
    tier = SHOWN[judged.verdict or "not_validated"]
    if verdict is None or judged.verdict != "ran":
        return tier, 0, 0
    return tier, 1 if verdict.refused else 0, 0 if meaningful(verdict) else 1


def meaningful(verdict: Verdict) -> bool:
    """A value that is not None or empty, non-empty assigned names, or printed output. A bound
    method is not meaningful either: ``df['units'].sum`` without its call is a slip, not a result."""
    if verdict.value is not None and not _empty(verdict.value):
        return True
    if verdict.assigned and not all(_empty(s) for s in verdict.assigned):
        return True
    return bool(verdict.stdout.strip())


# The types of a method taken from an object and not called.
_UNCALLED_METHODS = frozenset({"method", "builtin_function_or_method", "method-wrapper", "method_descriptor"})


def _empty(spec: Spec) -> bool:
    if spec.type == "NoneType" or spec.type in _UNCALLED_METHODS:
        return True
    if spec.shape and 0 in spec.shape:
        return True
    return spec.length == 0
