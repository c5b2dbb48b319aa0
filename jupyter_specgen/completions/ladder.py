"""The shorter versions of a candidate worth running too: a weak model's good start is kept. Pure.

A small model held to the live state often writes the right start and then goes wrong:
``weather[`` → ``'area_km2', 'S', 'B', (2, 2, …`` or ``df.groupby('k')['v'].`` → ``sum(0x9, …``.
The whole candidate raises, yet ``'area_km2']`` and ``sum()`` would have run. ``ladder`` gives
the candidate cut back at the ends of its tokens, each with the brackets it leaves open closed,
kept only when the cell then parses (or is unfinished only because the user left a block open):
validation runs these *rungs* beside the whole candidate and the longest one that holds up is
what is shown. Nothing is shown that did not run, so a cut never puts anything unproven on
screen; it only lets the part that was right through.

A cut is taken after a complete operand (a name, a number, a string, a closing bracket) or
after a call's opening parenthesis (``sum(`` → ``sum()``); never inside a string or a comment,
never after an operator or a comma (the statement would be left guessing), never between a
name and the ``(`` of its call (``sum`` alone is a method, not what the model meant). The brackets closed
are those the rung itself opened, and the user's own when the cursor is at the end of its line
and nothing after it closes them (the same rule as ``repair.close_brackets``).

Which rungs: at most ``MAX_RUNGS`` besides the whole candidate, chosen to cover the lengths that
matter: the shortest (usually just the head the constraint held to the live names), the first
that ends a call, the longest on the first line, and the longest of all.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from dataclasses import dataclass
from typing import Optional

from ..kernel.exercise import unfinished
from .repair import PAIRS, scan_brackets

__all__ = ["MAX_RUNGS", "Rung", "Ladder", "ladder", "called_head", "parses_in_cell", "parse_error"]

MAX_RUNGS = 3  # cut versions validated per candidate, besides the whole one

_PAIRS = PAIRS
_CLOSERS = frozenset(_PAIRS.values())
_OPERANDS = (tokenize.NAME, tokenize.NUMBER, tokenize.STRING)
_WANTS_OPERAND = frozenset({"and", "or", "not", "in", "is", "if", "else", "for", "lambda", "await",
                            "yield", "return", "del", "assert", "raise", "import", "from", "as",
                            "with", "while", "elif", "def", "class", "global", "nonlocal", "async"})


@dataclass(frozen=True)
class Rung:
    text: str  # the candidate cut at ``cut`` with its open brackets closed
    cut: int  # characters of the candidate kept
    closes_call: bool = False  # cut just after a call's ``(``, closed to an empty call


@dataclass(frozen=True)
class Ladder:
    rungs: list[Rung]  # shortest first
    whole_error: str  # the whole candidate's SyntaxError in the cell ("" when it parses or cannot be told)


def parse_error(source: str) -> str:
    """"" when ``source`` parses, or is an unfinished statement (``codeop``); else the
    SyntaxError's message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
        return ""
    except SyntaxError as exc:
        if unfinished(source):
            return ""
        return exc.msg or "invalid syntax"
    except (ValueError, MemoryError, RecursionError) as exc:
        return str(exc) or type(exc).__name__


def ladder(prefix: str, candidate: str, suffix: str = "") -> Ladder:
    """The rungs of ``candidate`` (cut versions that parse in ``prefix + rung + suffix``), shortest
    first, at most ``MAX_RUNGS``, none equal to ``candidate`` itself; and whether the whole one
    parses. No rungs and no error when the cell cannot be read here (IPython syntax, say: only
    the kernel can tell)."""
    prefix, suffix = _window(prefix, suffix)
    user_open = _open(prefix)
    rungs = _rungs(prefix, candidate, suffix, user_open) if user_open is not None else []
    # With rungs the cell reads here (IPython syntax would stop every rung), so the whole
    # candidate's error is Python's own and need not cost a fork to learn.
    return Ladder(rungs=rungs, whole_error=parse_error(prefix + candidate + suffix) if rungs else "")


def called_head(prefix: str, candidate: str, suffix: str = "") -> Optional[str]:
    """After ``expr.``, the attribute the candidate begins with, called with no arguments (and the
    user's open brackets closed as a rung's are), when the candidate does not call it itself:
    ``due = inv.`` + ``gross_total`` → ``gross_total()``, ``sum(i.`` + ``net_total, _g=1)`` →
    ``net_total()``. A weak model held to the live attributes writes a method's name and then
    junk; the name alone is a bound method, which means nothing as a value and raises inside
    ``sum``. Validation runs this beside the rungs, so it is shown only where the call runs.
    None when the cursor is not after a ``.`` or the candidate begins with no name."""
    if not prefix.endswith(".") or prefix.endswith(".."):
        return None
    match = _NAME_START.match(candidate)
    if match is None or candidate[match.end():].lstrip(" ")[:1] == "(":
        return None
    window_prefix, window_suffix = _window(prefix, suffix)
    user_open = _open(window_prefix)
    if user_open is None:
        return None
    return _closed(window_prefix, match.group() + "()", window_suffix, user_open)


_NAME_START = re.compile(r"[^\W\d]\w*")


def parses_in_cell(prefix: str, candidate: str, suffix: str = "") -> bool:
    """Whether ``prefix + candidate + suffix`` parses or is unfinished (read from the statement
    at the cursor, as ``ladder`` reads it): one parse, to spare a candidate that needs no rungs
    the parse of every cut."""
    prefix, suffix = _window(prefix, suffix)
    return not parse_error(prefix + candidate + suffix)


def _rungs(prefix: str, candidate: str, suffix: str, user_open: list[str]) -> list[Rung]:
    cuts = _cut_points(prefix, candidate)
    if not cuts:
        return []
    rungs: list[Rung] = []
    seen = {candidate.strip()}
    for cut, opens_call in cuts:
        head = candidate[:cut].rstrip(" \t")
        text = _closed(prefix, head, suffix, user_open)
        if text is None or text.strip() in seen:
            continue
        seen.add(text.strip())
        rungs.append(Rung(text=text, cut=cut, closes_call=opens_call))
    return _choose(rungs, candidate)


def _window(prefix: str, suffix: str) -> tuple[str, str]:
    """The part of the cell that parsing a rung needs: from the start of the top-level statement
    the cursor is in to the start of the next one (a cell of hundreds of lines would otherwise
    be parsed for every cut). Statements at column 0 parse on their own, except the clauses
    that continue one (``else``, ``except``...)."""
    lines = prefix.split("\n")
    start = 0
    for i in range(len(lines) - 1, 0, -1):
        if _starts_statement(lines[i]):
            start = i
            break
    if start and _inside_string_or_brackets("\n".join(lines[:start]) + "\n"):
        start = 0
    head = "\n".join(lines[start:])
    after = suffix.split("\n")
    for j in range(1, len(after)):
        if _starts_statement(after[j]):
            return head, "\n".join(after[:j]) + "\n"
    return head, suffix


def _starts_statement(line: str) -> bool:
    if not line[:1] or not (line[0].isalpha() or line[0] in "_@"):
        return False
    word = line.split(None, 1)[0].rstrip(":")
    return word not in ("else", "elif", "except", "finally", "case")


def _inside_string_or_brackets(source: str) -> bool:
    """Whether a line after ``source`` would continue one of its brackets or strings."""
    return _open(source) != []  # None: inside a string


def _closed(prefix: str, head: str, suffix: str, user_open: list[str]):
    """``head`` with the fewest innermost brackets closed that make the cell parse; failing that,
    an unfinished cell whose unfinished part is the user's (a block header, a bracket opened
    before the cursor). None when neither."""
    stack = _open(prefix + head)
    if stack is None:
        return None
    own = len(stack) - len(user_open) if stack[: len(user_open)] == user_open else 0
    closers = ["".join(_PAIRS[b] for b in reversed(stack[len(stack) - j:])) for j in range(len(stack) + 1)]
    for text in (head + c for c in closers):
        if _parses(prefix + text + suffix):
            return text
    for text in (head + c for c in closers[own:]):
        if not parse_error(prefix + text + suffix):
            return text  # unfinished, and not by a bracket the rung itself left open
    return None


def _parses(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


def _choose(rungs: list[Rung], candidate: str) -> list[Rung]:
    """Up to MAX_RUNGS of ``rungs`` (in cut order), spread over the lengths that matter: the
    longest first (it keeps the most of the model's work), then the longest on the first line,
    the shortest (often the head alone), the first that ends a call."""
    if len(rungs) <= MAX_RUNGS:
        return rungs
    first_line_end = candidate.find("\n")
    on_first_line = [r for r in rungs if first_line_end < 0 or r.cut <= first_line_end]
    calls = [r for r in rungs if r.closes_call]
    picks = [rungs[-1], *on_first_line[-1:], rungs[0], *calls[:1]]
    chosen: list[Rung] = []
    for rung in picks:
        if rung not in chosen and len(chosen) < MAX_RUNGS:
            chosen.append(rung)
    return sorted(chosen, key=lambda r: r.cut)


def _cut_points(prefix: str, candidate: str) -> list[tuple[int, bool]]:
    """(offset in ``candidate`` after a token where a cut may fall, whether it opens a call), in
    order, the end of the candidate excluded."""
    source = prefix + candidate
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    boundary = len(prefix)
    points: list[tuple[int, bool]] = []
    previous = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER,
                            tokenize.COMMENT):
                continue
            if tok.type == tokenize.OP and tok.string == "(" and points and previous is not None \
                    and points[-1][0] == _end(previous, starts) - boundary:
                points.pop()  # ``sum`` of ``sum(``: the model meant a call, not the method itself
            end = _end(tok, starts)
            if end > boundary:
                operand = (tok.type in _OPERANDS and tok.string not in _WANTS_OPERAND) or (
                    tok.type == tokenize.OP and tok.string in _CLOSERS)
                opens_call = (tok.type == tokenize.OP and tok.string == "(" and previous is not None
                              and (previous.type == tokenize.NAME and previous.string not in _WANTS_OPERAND
                                   or previous.string in (")", "]")))
                if (operand or opens_call) and end - boundary < len(candidate.rstrip()):
                    points.append((end - boundary, opens_call))
            previous = tok
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass  # read as far as it goes: a candidate often ends inside a bracket or a string
    return points


def _end(tok: tokenize.TokenInfo, starts: list[int]) -> int:
    return starts[min(tok.end[0] - 1, len(starts) - 1)] + tok.end[1]


def _open(source: str) -> Optional[list[str]]:
    """The brackets open at the end of ``source``, or None when it cannot be read."""
    scanned = scan_brackets(source)
    return scanned[0] if scanned is not None else None
