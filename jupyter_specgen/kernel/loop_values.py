"""The value a loop variable takes first, as an expression the kernel can evaluate. Pure, text only.

At ``widths = [s.`` + `` for s in sizes]``, ``for name, rows in weather.groupby('station'):`` +
``    print(name, rows[`` or ``[s for s in sizes if s.width_px > s.`` the name before the cursor is
bound by the cell itself, so the kernel has no value for it: the cursor gets no names and a weak
model writes junk there. Its first value is known, though: the first element of the iterable,
taken apart as the target takes it apart. ``first_value`` gives that as an expression,
``next(iter(weather.groupby('station')))[1]``, which ``cursor.start`` evaluates in a fork of the
kernel (it calls user code: iterating may run a generator) and lists the names of.

Only a ``for`` whose scope holds the cursor counts: a comprehension's ``for`` inside a bracket
still open at the cursor (before or after it), or a ``for`` statement whose block the cursor is
in, when nothing in that block binds the name again before the cursor. Targets made of names
and tuples of names (``a, (b, c)``) are taken apart; a starred target, attributes and
subscripts are not. When several ``for`` bind the name, the innermost holds: the one nested
deepest in brackets, else the last before the cursor.
"""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from dataclasses import dataclass
from typing import Optional

__all__ = ["first_value"]

_SKIPPED = (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
_OPENERS = "([{"
_CLOSERS = ")]}"
_CLAUSE_ENDS = frozenset({"if", "for", "async"})


@dataclass(frozen=True)
class _Tok:
    type: int
    string: str
    start: int  # offsets into the text
    end: int
    line: int  # 1-based row of the start
    col: int


def first_value(before: str, after: str, name: str) -> Optional[str]:
    """The expression of the first value ``name`` takes in the ``for`` around the cursor (between
    ``before`` and ``after``), or None when no such ``for`` binds it or its target cannot be
    taken apart. Never raises."""
    try:
        return _first_value(before, after, name)
    except Exception:  # noqa: BLE001 - half-typed code of every shape arrives here
        return None


def _first_value(before: str, after: str, name: str) -> Optional[str]:
    text = before + after
    cursor = len(before)
    toks = _tokens(text)
    stacks = _stacks(toks)
    at_cursor = _open_at(toks, stacks, cursor)
    best: Optional[tuple[int, int, str]] = None  # (depth, position, expression)
    for i, tok in enumerate(toks):
        if tok.type != tokenize.NAME or tok.string != "for":
            continue
        clause = _clause(toks, stacks, i)
        if clause is None:
            continue
        target, iterable, end = clause
        if toks[target[0]].start <= cursor <= toks[iterable[1]].end:
            continue  # the cursor is in this clause's own target or iterable: not in its scope
        stack = stacks[i]
        if stack:
            in_scope = stack[-1] in at_cursor  # a comprehension whose bracket is still open at the cursor
        else:
            # A for statement's block, where nothing before the cursor binds the name again
            # (``x = x + 1`` in the body: its value is no longer the first element).
            in_scope = _in_block(text, toks, i, end, cursor) and not _rebound(text[toks[end].end:cursor], name)
        if not in_scope:
            continue
        path = _path(text[toks[target[0]].start:toks[target[1]].end], name)
        if path is None:
            continue
        expression = f"next(iter({text[toks[iterable[0]].start:toks[iterable[1]].end]}))" + "".join(
            f"[{k}]" for k in path)
        rank = (len(stack), tok.start if tok.start < cursor else -1)
        if best is None or rank >= best[:2]:
            best = (*rank, expression)
    return best[2] if best is not None else None


def _tokens(text: str) -> list[_Tok]:
    """The code tokens of ``text`` (NEWLINE kept), as far as it reads."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(row: int, col: int) -> int:
        return min(len(text), starts[min(row - 1, len(starts) - 1)] + col)

    out: list[_Tok] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in _SKIPPED or tok.type == tokenize.ERRORTOKEN:
                continue
            out.append(_Tok(tok.type, tok.string, offset(*tok.start), offset(*tok.end), tok.start[0], tok.start[1]))
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass  # an unclosed bracket at the end of the cell: the tokens read so far are what matters
    return out


def _stacks(toks: list[_Tok]) -> list[tuple[int, ...]]:
    """For each token, the indices of the brackets open before it (outermost first)."""
    stack: list[int] = []
    out: list[tuple[int, ...]] = []
    for i, tok in enumerate(toks):
        if tok.type == tokenize.OP and tok.string in _CLOSERS and stack:
            stack.pop()
        out.append(tuple(stack))
        if tok.type == tokenize.OP and tok.string in _OPENERS:
            stack.append(i)
        elif tok.type == tokenize.NEWLINE:
            stack = []
    return out


def _open_at(toks: list[_Tok], stacks: list[tuple[int, ...]], cursor: int) -> set[int]:
    """The brackets open at ``cursor``."""
    open_: list[int] = []
    for i, tok in enumerate(toks):
        if tok.start >= cursor:
            break
        open_ = list(stacks[i])
        if tok.type == tokenize.OP and tok.string in _OPENERS:
            open_.append(i)
        elif tok.type == tokenize.NEWLINE:
            open_ = []
    return set(open_)


def _clause(toks: list[_Tok], stacks: list[tuple[int, ...]], i: int):
    """((first, last) target tokens, (first, last) iterable tokens, index of the token that ends
    the clause) of the ``for`` at ``i``; None when it is not complete enough to read."""
    depth = len(stacks[i])
    j = i + 1
    while j < len(toks) and not (toks[j].type == tokenize.NAME and toks[j].string == "in" and len(stacks[j]) == depth):
        if toks[j].type == tokenize.NEWLINE or len(stacks[j]) < depth:
            return None
        j += 1
    if j >= len(toks) or j == i + 1:
        return None
    k = j + 1
    while k < len(toks):
        tok = toks[k]
        if tok.type == tokenize.NEWLINE or len(stacks[k]) < depth:
            break
        if len(stacks[k]) == depth and (
                (tok.type == tokenize.NAME and tok.string in _CLAUSE_ENDS)
                or (tok.type == tokenize.OP and tok.string == ":" and not depth)):
            break
        k += 1
    if k == j + 1:
        return None
    return (i + 1, j - 1), (j + 1, k - 1), k


def _in_block(text: str, toks: list[_Tok], i: int, end: int, cursor: int) -> bool:
    """Whether ``cursor`` is in the block of the ``for`` statement at ``i`` (its header ends at ``end``)."""
    if i and toks[i - 1].type != tokenize.NEWLINE and not (toks[i - 1].string == "async" and (
            i < 2 or toks[i - 2].type == tokenize.NEWLINE)):
        return False  # not the first word of its statement
    if end >= len(toks) or toks[end].string != ":" or cursor < toks[end].end:
        return False
    indent = toks[i].col
    lines = text[toks[end].end:cursor].split("\n")
    # The rest of the header's line (``for x in y: print(x.``), then every line down to the
    # cursor's is deeper than the header, or blank.
    return all(not line.strip() or line.lstrip().startswith("#") or len(line) - len(line.lstrip()) > indent
               for line in lines[1:])


def _rebound(body: str, name: str) -> bool:
    """Whether ``body`` (a block's text before the cursor) binds ``name``."""
    from .cursor import bound_in

    first, _, rest = body.partition("\n")
    return name in bound_in(first) or name in bound_in(textwrap.dedent(rest))


def _path(target: str, name: str) -> Optional[list[int]]:
    """The indices that take ``name`` out of a value unpacked into ``target``; None if it is not there."""
    node = ast.parse(target.strip(), mode="eval").body

    def find(node: ast.expr) -> Optional[list[int]]:
        if isinstance(node, ast.Name):
            return [] if node.id == name else None
        if isinstance(node, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in node.elts):
            for k, element in enumerate(node.elts):
                found = find(element)
                if found is not None:
                    return [k, *found]
        return None

    return find(node)
