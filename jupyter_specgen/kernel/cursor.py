"""The names that can follow at the cursor, taken from the live namespace of the kernel.

The backend holds the identifier it generates at the cursor to these names (``Constraint`` in
``specgen_backend.protocol``). Two steps:

- ``locate`` reads the code before the cursor (text only, tokenize-based, never raises) and says
  what kind of name comes next and of what: an attribute of ``expr`` (``sales.gr``), a column
  label of ``expr`` (``sales['un``, ``sales.loc[:, ``), a parameter of the callable ``expr``
  (``pd.read_csv(``), or a name at the start of an expression (``total = ``). Inside a string or
  comment, at the start of a statement (a new name may be bound there) and where a name is being
  bound (``for x``, ``def f(x``) nothing is constrained.
- ``start``/``finish`` find the value of ``expr`` and list its names. A plain name, or a chain
  of attributes that only reads modules and functions of trusted types, is looked up in the
  kernel directly; anything that could run user code (calls, subscripts, properties, a
  user-defined ``__dir__``/``__getattr__``) is evaluated in a fork of the kernel fenced by
  ``forking.enter_sandbox`` and cut at the budget's deadline. A name the cell itself binds in
  a ``for`` around the cursor (``[s. for s in sizes]``) stands for its first value
  (``loop_values``), evaluated in such a fork.

A list of names is sent whole or not at all: a cut list would forbid names that exist.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import io
import json
import keyword
import logging
import numbers
import os
import re
import sys
import time
import tokenize
import types
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

__all__ = ["CursorKind", "Site", "Answer", "Pending", "locate", "bound_in", "start", "finish", "settle", "names_at"]

log = logging.getLogger(__name__)

CursorKind = Literal["", "attribute", "column", "parameter", "name"]

# Type modules whose attribute access, ``__dir__`` and signatures run no user code (the
# libraries' own code, bounded). Same spirit as ``specs._TRUSTED_MODULES``.
_TRUSTED_ROOTS = frozenset(
    {"builtins", "collections", "datetime", "decimal", "fractions", "pathlib", "re", "enum", "functools",
     "itertools", "math", "numpy", "pandas", "torch", "typing", "json", "os", "sys", "random", "statistics"}
)
# Keywords after which an expression starts.
_EXPR_KEYWORDS = frozenset(
    {"return", "in", "not", "and", "or", "if", "elif", "while", "yield", "assert", "del", "else", "await",
     "is", "from", "raise", "except", "with"}
)
# Keywords after which a name is bound, not read: nothing to hold it to.
_BINDING_KEYWORDS = frozenset({"for", "as", "def", "class", "import", "global", "nonlocal", "lambda"})
_COMPOUND = frozenset({"if", "elif", "else", "while", "for", "with", "try", "except", "finally", "def", "class",
                       "async"})
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_ATOM_KEYWORDS = frozenset({"True", "False", "None"})
_STRING_PREFIX = re.compile(r"[rRbBuUfF]{1,2}")
_SKIPPED = (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
_IDENT = re.compile(r"[^\W\d]\w*")


# ----------------------------------------------------------------------------------------------
# Where the cursor is (text only)


@dataclass(frozen=True)
class Site:
    """What comes next at the cursor, read from the text before it."""

    kind: CursorKind
    expr: str = ""  # attribute/column: the value's expression; parameter: the callable's
    typed: str = ""  # what the user typed of the head (an identifier, or a quote and the start of a label)
    given: tuple[str, ...] = ()  # parameter: keyword arguments already in the call
    accessor: str = ""  # column: "loc" for ``expr.loc[:, `` (``expr`` is then the frame)
    in_list: bool = False  # column: inside a list of labels (``df[['a', ``)
    positional: int = 0  # parameter: positional arguments already in the call (-1: unknown)
    keyword: str = ""  # name: the keyword whose value is at the cursor (``y`` in ``df.plot(y=``)
    note: str = ""  # why nothing is constrained (kind "")


@dataclass(frozen=True)
class Answer:
    """The heads allowed at the cursor; the fields of ``messages.CursorReply``."""

    kind: CursorKind = ""
    names: list[str] = field(default_factory=list)
    typed: str = ""
    required: bool = True
    note: str = ""


@dataclass
class Pending:
    """A fork evaluating the site's expression; hand to ``finish``."""

    child: Any  # forking.Child
    deadline: float  # time.monotonic()
    site: Site
    names: list[str]  # kind "name" heads, merged into a parameter answer
    max_names: int
    cache: Optional[dict] = None
    key: Any = None
    grace: float = 0.0  # time.monotonic() until which a late fork may finish into the cache
    settled: bool = False


def locate(before: str, after: str = "") -> Site:
    """What kind of name follows ``before`` (the cell up to the cursor); never raises."""
    try:
        return _locate(before, after)
    except Exception:  # noqa: BLE001 - half-typed code of every shape arrives here
        log.debug("could not read the code at the cursor", exc_info=True)
        return Site("", note="could not read the code at the cursor")


class _Tok:
    __slots__ = ("type", "string", "start", "end")

    def __init__(self, type_: int, string: str, start: int, end: int):
        self.type, self.string, self.start, self.end = type_, string, start, end

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"_Tok({tokenize.tok_name[self.type]}, {self.string!r})"


def _tokens(text: str) -> tuple[list[_Tok], str, int]:
    """Tokens of ``text`` as far as it reads; (tokens, state, offset of an unterminated string).

    state: "code", "string" (the end of ``text`` is inside a string) or "comment".
    """
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(pos: tuple[int, int]) -> int:
        row, col = pos
        return min(len(text), starts[min(row - 1, len(starts) - 1)] + col)

    toks: list[_Tok] = []
    last_line = text.rfind("\n") + 1
    open_string = -1
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            begin, end = offset(tok.start), offset(tok.end)
            if tok.type == tokenize.ERRORTOKEN and tok.string in ("'", '"'):
                if begin >= last_line and open_string < 0:
                    open_string = begin  # a string that runs to the end of the line, so to the cursor
                continue
            if tok.type == tokenize.ERRORTOKEN and tok.string.isspace():
                continue
            if open_string >= 0:
                continue  # the rest of the line is inside that string
            toks.append(_Tok(tok.type, tok.string, begin, end))
    except tokenize.TokenError as exc:
        message = str(exc.args[0]) if exc.args else ""
        if "string" in message:  # "EOF in multi-line string", "unterminated string literal"
            pos = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], tuple) else None
            at = offset(pos) if pos else -1
            if at >= last_line and text[at:at + 3] not in ("'''", '"""'):
                open_string = at
            else:
                return toks, "string", -1
    except (SyntaxError, ValueError):  # IndentationError and friends: what follows was not read
        return toks, "broken", -1
    if open_string >= 0:
        return [t for t in toks if t.start < open_string], "string", open_string
    significant = [t for t in toks if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER,
                                                     tokenize.DEDENT, tokenize.INDENT)]
    if significant and significant[-1].type == tokenize.COMMENT and significant[-1].start >= last_line:
        return toks, "comment", -1
    return toks, "code", -1


def _locate(before: str, after: str) -> Site:
    toks, state, open_string = _tokens(before)
    typed = ""
    if state == "comment":
        return Site("", note="inside a comment")
    if state == "broken":
        return Site("", note="could not read the code at the cursor")
    if state == "string":
        # Only a label being typed right after ``df[`` / ``df.loc[:, `` is a head: ``df['un``.
        if open_string < 0:
            return Site("", note="inside a string")
        prefix_tok = toks[-1] if toks else None
        if prefix_tok is not None and prefix_tok.end == open_string and _STRING_PREFIX.fullmatch(prefix_tok.string):
            return Site("", note="inside a string")  # f'..., r'...
        typed = before[open_string:]
        code = [t for t in toks if t.type not in _SKIPPED]
        site = _classify(_statement(code), before, typed_kind="string")
        if site.kind != "column":
            return Site("", note="inside a string")
        return dataclasses.replace(site, typed=typed)
    code = [t for t in toks if t.type not in _SKIPPED and not (t.type == tokenize.NEWLINE and not t.string)]
    typed_kind = ""
    if code and code[-1].end == len(before) and code[-1].type in (tokenize.NAME, tokenize.NUMBER):
        last = code.pop()
        typed, typed_kind = last.string, ("name" if last.type == tokenize.NAME else "number")
        if typed_kind == "name" and not typed.isidentifier():
            return Site("", note="not an identifier")
    elif code and code[-1].end == len(before) and code[-1].type == tokenize.STRING:
        return Site("", note="after a string")
    statement = _statement(code)
    if statement is None:
        return Site("", note="could not read the code at the cursor")
    site = _classify(statement, before, typed_kind=typed_kind)
    if typed_kind == "number" and site.kind != "column":
        return Site("", note="typing a number")
    if typed_kind == "name" and site.kind == "column":
        site = Site("name")  # ``df[mask``: a name, not a label
    if site.kind == "" or not typed:
        return site
    return dataclasses.replace(site, typed=typed)


def _statement(code: list[_Tok]) -> Optional[list[_Tok]]:
    """The tokens of the statement the cursor is in (after the last NEWLINE, ``;`` or header colon)."""
    start = 0
    depth = 0
    lambdas = [0]  # pending lambdas per bracket depth
    first = 0
    for i, tok in enumerate(code):
        s = tok.string
        if tok.type == tokenize.NEWLINE or (tok.type == tokenize.OP and s == ";" and depth == 0):
            start, first, depth, lambdas = i + 1, i + 1, 0, [0]
            continue
        if tok.type != tokenize.OP and not (tok.type == tokenize.NAME and s == "lambda"):
            continue
        if s in _OPENERS:
            depth += 1
            lambdas.append(0)
        elif s in _CLOSERS:
            if depth == 0:
                return None  # an unmatched closer: nothing sensible to say
            depth -= 1
            lambdas.pop()
        elif s == "lambda":
            lambdas[-1] += 1
        elif s == ":" and lambdas[-1]:
            lambdas[-1] -= 1
        elif s == ":" and depth == 0 and first < len(code) and code[first].string in _COMPOUND:
            start, first = i + 1, i + 1  # ``if x: y.`` - the statement after the header
    return code[start:]


def _classify(stmt: Optional[list[_Tok]], before: str, *, typed_kind: str) -> Site:
    if stmt is None:
        return Site("", note="could not read the code at the cursor")
    if not stmt:
        return Site("", note="start of a statement: a new name may be bound")
    if stmt[0].string in ("import", "from"):
        return Site("", note="an import")
    match, stack = _brackets(stmt)
    if match is None:
        return Site("", note="could not read the code at the cursor")
    prev = stmt[-1]
    n = len(stmt)
    if prev.string == "." and prev.type == tokenize.OP:
        expr = _primary(stmt, n - 1, match, before)
        if expr is None:
            return Site("", note="no expression before the dot")
        return Site("attribute", expr=expr)
    if _binding(stmt, stack):
        return Site("", note="a name is being bound here")
    opener = stmt[stack[-1]] if stack else None
    if opener is not None and prev.string in ("(", "[", "{", ","):
        site = _in_brackets(stmt, stack, match, before)
        if site is not None:
            return site
        if opener.string in "[{" and prev is opener and not _is_trailer(stmt, stack[-1]):
            return Site("", note="a display: a comprehension may bind names later")
        return Site("name")
    if opener is None and prev.string == "," and not any(t.string == "=" for t in stmt):
        return Site("", note="perhaps a target list: a new name may be bound")
    if (opener is not None and opener.string == "(" and prev.string == "=" and n >= 3
            and stmt[-2].type == tokenize.NAME and stmt[-3].string in ("(", ",") and _is_trailer(stmt, stack[-1])):
        # a keyword's value (``df.plot(x='year', y=``): any expression, and the callee is kept
        # for the labels of its frame
        return Site("name", expr=_primary(stmt, stack[-1], match, before) or "", keyword=stmt[-2].string)
    if prev.type == tokenize.OP and prev.string not in (")", "]", "}", "."):
        return Site("name")
    if prev.type == tokenize.NAME and prev.string in _EXPR_KEYWORDS:
        return Site("name")
    return Site("", note="after an operand")


def _brackets(stmt: list[_Tok]) -> tuple[Optional[dict[int, int]], list[int]]:
    """(closer index → opener index, or None if they do not pair; indices of the brackets left open)."""
    match: dict[int, int] = {}
    stack: list[int] = []
    for i, tok in enumerate(stmt):
        if tok.type != tokenize.OP:
            continue
        if tok.string in _OPENERS:
            stack.append(i)
        elif tok.string in _CLOSERS:
            if not stack or stmt[stack[-1]].string != _CLOSERS[tok.string]:
                return None, []
            match[i] = stack.pop()
    return match, stack


def _ends_primary(tok: _Tok) -> bool:
    if tok.type == tokenize.NAME:
        return not keyword.iskeyword(tok.string) or tok.string in _ATOM_KEYWORDS
    return tok.type in (tokenize.STRING, tokenize.NUMBER) or (tok.type == tokenize.OP and tok.string in _CLOSERS)


def _is_trailer(stmt: list[_Tok], opener: int) -> bool:
    """Whether the bracket at ``opener`` is a call or subscript (it follows a primary)."""
    return opener > 0 and stmt[opener].string in "([" and _ends_primary(stmt[opener - 1])


def _primary(stmt: list[_Tok], end: int, match: dict[int, int], before: str) -> Optional[str]:
    """The text of the primary expression (atom with trailers) that ends just before ``stmt[end]``."""
    j = end - 1
    start = None
    while j >= 0:
        tok = stmt[j]
        if tok.type == tokenize.OP and tok.string in _CLOSERS:
            opener = match.get(j)
            if opener is None:
                return None
            if _is_trailer(stmt, opener):
                j = opener - 1
                continue
            start = opener
        elif _ends_primary(tok):
            start = j
            while start > 0 and tok.type == tokenize.STRING and stmt[start - 1].type == tokenize.STRING:
                start -= 1  # implicit concatenation
        else:
            return None
        if start > 1 and stmt[start].type == tokenize.NAME and stmt[start - 1].string == ".":
            j = start - 2
            continue
        break
    if start is None:
        return None
    text = before[stmt[start].start:stmt[end - 1].end]
    try:
        ast.parse(text.strip() if "\n" not in text else f"({text})", mode="eval")
    except (SyntaxError, ValueError):
        return None
    return text


def _binding(stmt: list[_Tok], stack: list[int]) -> bool:
    """Whether the cursor is where a name is bound: ``for x``, ``lambda x``, ``def f(x``, ``as x``."""
    top = stack[-1] if stack else -1
    if top > 1 and stmt[top].string == "(" and stmt[top - 2].string == "def":
        # the parameters of a def; after ``=`` or ``:`` comes an expression (a default, an annotation)
        for tok in reversed(stmt[top + 1:]):
            if tok.string in ("=", ":"):
                return False
            if tok.string == ",":
                return True
        return True
    for tok in reversed(stmt[top + 1:]):
        if tok.type == tokenize.NAME:
            if tok.string == "in":
                return False
            if tok.string in _BINDING_KEYWORDS:
                return True
        elif tok.type != tokenize.OP or tok.string not in (",", "*", "**", "(", ")", "[", "]"):
            return False
    return False


def _in_brackets(stmt: list[_Tok], stack: list[int], match: dict[int, int], before: str) -> Optional[Site]:
    """A column or parameter site inside the innermost open bracket, if it is one."""
    top = stack[-1]
    opener = stmt[top]
    items = _top_level(stmt, top)
    if opener.string == "[" and _is_trailer(stmt, top):
        return _subscript_site(stmt, top, items, match, before)
    if opener.string == "[" and len(stack) > 1 and stmt[stack[-2]].string == "[" and _is_trailer(stmt, stack[-2]):
        # a list of labels: ``df[['a', `` / ``df.loc[:, ['a', ``
        outer = stack[-2]
        if stmt[top - 1].string in ("[", ","):
            site = _subscript_site(stmt, outer, _top_level(stmt, outer, upto=top), match, before, in_list=True)
            if site is not None and site.kind == "column":
                return site
        return None
    if opener.string == "(" and _is_trailer(stmt, top):
        if top > 1 and stmt[top - 2].string in ("def", "class"):
            return None
        expr = _primary(stmt, top, match, before)
        if expr is None:
            return None
        given = tuple(stmt[i].string for i in range(top + 1, len(stmt) - 1)
                      if stmt[i].type == tokenize.NAME and stmt[i + 1].string == "="
                      and _depth_between(stmt, top, i) == 0 and stmt[i - 1].string in ("(", ","))
        return Site("parameter", expr=expr, given=given, positional=_positional_count(stmt, top))
    return None


def _positional_count(stmt: list[_Tok], top: int) -> int:
    """Positional arguments already written in the call opened at ``top``; -1 when unknown (``*args``)."""
    count = 0
    depth = 0
    arg: list[_Tok] = []
    for tok in stmt[top + 1:]:
        if tok.type == tokenize.OP and tok.string in _OPENERS:
            depth += 1
        elif tok.type == tokenize.OP and tok.string in _CLOSERS:
            depth -= 1
        if depth == 0 and tok.type == tokenize.OP and tok.string == ",":
            if arg and arg[0].string in ("*", "**"):
                return -1
            if arg and not (len(arg) > 1 and arg[0].type == tokenize.NAME and arg[1].string == "="):
                count += 1
            arg = []
        else:
            arg.append(tok)
    return count


def _top_level(stmt: list[_Tok], opener: int, upto: Optional[int] = None) -> list[str]:
    """The commas and colons directly inside the bracket at ``opener`` (up to ``upto``)."""
    out = []
    depth = 0
    for tok in stmt[opener + 1:upto]:
        if tok.type != tokenize.OP:
            continue
        if tok.string in _OPENERS:
            depth += 1
        elif tok.string in _CLOSERS:
            depth -= 1
        elif depth == 0 and tok.string in (",", ":"):
            out.append(tok.string)
    return out


def _depth_between(stmt: list[_Tok], opener: int, index: int) -> int:
    depth = 0
    for tok in stmt[opener + 1:index]:
        if tok.type == tokenize.OP and tok.string in _OPENERS:
            depth += 1
        elif tok.type == tokenize.OP and tok.string in _CLOSERS:
            depth -= 1
    return depth


def _subscript_site(stmt: list[_Tok], top: int, items: list[str], match: dict[int, int], before: str, *,
                    in_list: bool = False) -> Optional[Site]:
    """A column site for the subscript opened at ``top`` (``items``: its separators so far)."""
    expr = _primary(stmt, top, match, before)
    if expr is None:
        return None
    accessor = re.search(r"\.\s*(loc|iloc|at|iat)\s*$", expr)
    if accessor:
        # ``df.loc[rows, cols]``: the labels go after the one comma; rows are not held
        if accessor.group(1) == "loc" and items.count(",") == 1 and items[-1] == ",":
            return Site("column", expr=expr[:accessor.start()], accessor="loc")
        return None
    if not items and (in_list or top == len(stmt) - 1):
        return Site("column", expr=expr, in_list=in_list)
    return None


def bound_in(text: str) -> set[str]:
    """Names that ``text`` binds (assignment and loop targets, parameters, imports, ``as``), by tokens.

    Approximate on purpose: a name wrongly counted as bound only loses its constraint.
    """
    toks, _, _ = _tokens(text)
    code = [t for t in toks if t.type not in _SKIPPED]
    bound: set[str] = set()
    mode = ""  # "for", "lambda", "import", "def"
    depth = 0
    line_start = 0
    for i, tok in enumerate(code):
        s = tok.string
        prev = code[i - 1].string if i else ""
        nxt = code[i + 1].string if i + 1 < len(code) else ""
        if tok.type == tokenize.NEWLINE:
            mode, depth, line_start = "", 0, i + 1
            continue
        if tok.type == tokenize.OP:
            if s in _OPENERS:
                depth += 1
            elif s in _CLOSERS:
                depth -= 1
                if mode == "def" and depth == 0:
                    mode = ""
            elif s == "=" and depth == 0:
                targets = code[line_start:i]
                for k, t in enumerate(targets):
                    after_t = targets[k + 1].string if k + 1 < len(targets) else ""
                    before_t = targets[k - 1].string if k else ""
                    if (t.type == tokenize.NAME and not keyword.iskeyword(t.string) and before_t != "."
                            and after_t not in (".", "[", "(")):
                        bound.add(t.string)  # ``x = ``, ``a, b = ``; not ``df['x'] = `` or ``obj.y = ``
            elif s == ":" and mode == "lambda":
                mode = ""
            continue
        if tok.type != tokenize.NAME:
            continue
        if s in ("for", "lambda", "import", "def"):
            mode = s
            continue
        if s == "in" and mode == "for":
            mode = ""
            continue
        if keyword.iskeyword(s):
            continue
        if mode in ("for", "lambda", "import") or prev in ("as", "def", "class", "global", "nonlocal"):
            bound.add(s)
        elif mode == "def" and prev in ("(", ",", "*", "**"):
            bound.add(s)
        elif nxt in (":=", "+=", "-=", "*=", "/=", "//=", "%=", "**=", "|=", "&=", "^=", ">>=", "<<=", "@="):
            bound.add(s)
    return bound


# ----------------------------------------------------------------------------------------------
# The names of live values (in the kernel)


class _Unsafe(Exception):
    """Looking this up in the kernel could run user code: evaluate it in a fork."""


class _Undefined(Exception):
    """The expression's root name is not defined in the kernel."""


@dataclass(frozen=True)
class _Raw:
    """The heads of a value whatever is typed (cached per execution count; filtered per keystroke)."""

    kind: CursorKind
    names: list[str] = field(default_factory=list)
    required: bool = True
    soft: bool = False  # required only once something is typed of the head (dict keys, Series labels)
    note: str = ""
    # parameter: positional-only parameters (not in ``names``), then how many of ``names`` come
    # first as positional-or-keyword: the positional arguments written fill those in order
    positional_only: int = 0
    positional_or_keyword: int = 0
    var_positional: bool = False  # parameter: the callable takes ``*args``
    # column: a frame's plain ``[`` with flat column labels: after the label only ``]`` can come
    closes: bool = False
    # parameter: the column labels of the frame the callable is a method of (``df.groupby(``,
    # ``df.plot(x=``): its arguments are so often labels that they are heads as well
    labels: list[str] = field(default_factory=list)


def start(
    namespace: Mapping[str, Any], before: str, after: str = "", *, notebook: Sequence[str] = (),
    hidden: Container[str] = (), budget_ms: float = 60, max_names: int = 4000, may_fork: bool = True,
    cache: Optional[dict] = None,
) -> Union[Answer, Pending]:
    """The heads at the cursor, or a fork computing them (``finish`` it) when user code could run.

    ``cache``: a dict the caller clears whenever a cell runs; the heads of an expression are kept
    there, so the next keystrokes on the same expression (``sales.groupby('region').a``, ``.ag``)
    neither fork nor look it up again.
    """
    began = time.monotonic()
    deadline = began + max(0.0, budget_ms) / 1000
    site = locate(before, after)
    if site.kind == "":
        return Answer(note=site.note)
    if site.kind == "name":
        heads = _name_heads(namespace, before, after, notebook, hidden, site.typed, max_names)
        labels = (_callee_labels(site.expr, namespace, max_names)
                  if site.expr and site.keyword in _LABEL_PARAMETERS else [])
        return _limit(Answer("name", [n for n in labels if n.startswith(site.typed)] + heads,
                             typed=site.typed, required=False), max_names)
    try:
        node = ast.parse(site.expr.strip() if "\n" not in site.expr else f"({site.expr})", mode="eval").body
    except (SyntaxError, ValueError):
        return Answer(note="could not read the expression before the cursor")
    root = _root(node)
    bound = bound_in(before + "\n" + after) if root is not None else set()
    if root in bound:
        node = _with_loop_values(node, before, after, bound)
        if node is None:
            return Answer(note=f"{root!r} is bound in this cell: its value is not known yet")
        root = _root(node)
    if root is not None and root not in namespace and not hasattr(builtins, root):
        return Answer(note=f"{root!r} is not defined in the kernel")
    extra = (_name_heads(namespace, before, after, notebook, hidden, site.typed, max_names)
             if site.kind == "parameter" else [])
    key = (site.kind, ast.dump(node), site.accessor, max_names)
    if cache is not None and key not in cache and len(cache) >= _CACHE_ENTRIES:
        cache.clear()  # bounded: many different expressions between two cells are rare
    if cache is not None and key in cache:
        cached = cache[key]
        if cached is _EVALUATING:
            return Answer(note=f"still evaluating {site.expr.strip()} in a fork (asked before)")
        return _final(cached, site, extra, max_names)
    try:
        raw = _raw(site, _lookup(node, namespace), max_names)
        if cache is not None:
            cache[key] = raw
        return _final(raw, site, extra, max_names)
    except _Unsafe:
        pass
    except _Undefined as exc:
        return Answer(note=f"{exc} is not defined in the kernel")
    except Exception as exc:  # noqa: BLE001 - trusted code can still raise
        return Answer(note=f"looking up {site.expr.strip()} failed: {type(exc).__name__}")
    if not may_fork:
        return Answer(note="not evaluated: the kernel is running a cell")
    from . import forking

    status = getattr(forking, "sandbox_status", None)
    ok, why = status() if status is not None else (forking.fork_available(), "this platform cannot fork")
    if not ok:
        return Answer(note=f"not evaluated: {why}")
    left = deadline - time.monotonic()
    if left < 0.005:
        return Answer(note="not evaluated: out of time")
    # With a cache, a fork still running at the deadline may finish later into it (``settle``):
    # the reply goes without names, the next keystroke on the same expression gets them.
    grace = max(deadline, began + _GRACE_S) if cache is not None else deadline
    child = forking.spawn(_child_main(node, namespace, site, grace - time.monotonic(), max_names))
    if cache is not None:
        cache[key] = _EVALUATING
    return Pending(child=child, deadline=deadline, site=site, names=extra, max_names=max_names, cache=cache,
                   key=key, grace=grace)


def _with_loop_values(node: ast.expr, before: str, after: str, bound: set[str], depth: int = 3) -> Optional[ast.expr]:
    """``node`` with each name the cell binds in a ``for`` around the cursor replaced by that
    loop's first value (``loop_values``: ``s.`` of ``[s. for s in sizes]`` reads
    ``next(iter(sizes)).``, evaluated in a fork since it calls); None when a name the cell binds
    is not such a loop variable (its value is not known yet). Loops nested in loops are followed
    ``depth`` deep (``for c in r.cells`` inside ``for r in rows``)."""
    from .loop_values import first_value

    for _ in range(depth):
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & bound
        if not names:
            return node
        values = {}
        for name in names:
            text = first_value(before, after, name)
            if text is None:
                return None
            try:
                values[name] = ast.parse(text, mode="eval").body
            except (SyntaxError, ValueError):
                return None

        class _Substitute(ast.NodeTransformer):
            def visit_Name(self, name: ast.Name) -> ast.expr:
                return values.get(name.id, name)

        node = ast.fix_missing_locations(_Substitute().visit(node))
    return None


# How long a fork evaluating an expression may run past its request's deadline, for the next one.
_GRACE_S = 2.0
_CACHE_ENTRIES = 256
_EVALUATING = object()


def finish(pending: Pending) -> Answer:
    """Wait for the fork of ``pending`` until its deadline and build the answer.

    With a cache and the fork still running, answers without names at the deadline; call
    ``settle`` then (on the same thread) to let the fork finish into the cache.
    """
    if pending.grace > pending.deadline and not _readable(pending.child.fd, pending.deadline):
        return Answer(note=f"evaluating {pending.site.expr.strip()} in a fork: not done by the deadline "
                           "(kept going for the next request)")
    return _collect(pending)


def settle(pending: Pending) -> None:
    """Let a fork that ``finish`` left running end (or kill it at its grace) and cache what it found."""
    if not pending.settled:
        _collect(pending)


def _readable(fd: int, deadline: float) -> bool:
    import select

    while True:
        left = deadline - time.monotonic()
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
        except InterruptedError:
            continue
        return bool(ready)


def _collect(pending: Pending) -> Answer:
    from . import forking

    pending.settled = True
    (outcome,) = forking.collect([pending.child], deadline=max(pending.deadline, pending.grace))
    site = pending.site
    try:
        report = json.loads(outcome.data.decode("utf-8", "replace")) if outcome.data else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        why = "still running at the deadline" if outcome.killed else "the fork ended without a report"
        raw = _Raw("", note=f"evaluating {site.expr.strip()} in a fork: {why}")
    elif report.get("error"):
        raw = _Raw("", note=f"evaluating {site.expr.strip()} in a fork raised {report['error']}")
    else:
        kind = report.get("kind", "")
        raw = _Raw(kind if kind in ("attribute", "column", "parameter") else "",
                   names=[n for n in report.get("names", []) if isinstance(n, str)],
                   required=bool(report.get("required", True)), soft=bool(report.get("soft", False)),
                   note=str(report.get("note", "")) or "evaluated in a fork",
                   positional_only=int(report.get("positional_only", 0) or 0),
                   positional_or_keyword=int(report.get("positional_or_keyword", 0) or 0),
                   var_positional=bool(report.get("var_positional", False)),
                   closes=bool(report.get("closes", False)))
    if pending.cache is not None:
        pending.cache[pending.key] = raw  # a failure too: the next keystroke does not fork again for it
    return _final(raw, site, pending.names, pending.max_names)


def names_at(namespace: Mapping[str, Any], before: str, after: str = "", **options: Any) -> Answer:
    """``start``, ``finish`` and ``settle`` in one call."""
    result = start(namespace, before, after, **options)
    if not isinstance(result, Pending):
        return result
    try:
        return finish(result)
    finally:
        settle(result)


def _child_main(node: ast.expr, namespace: Mapping[str, Any], site: Site, timeout_s: float, max_names: int):
    from . import forking

    def main(fd: int) -> None:
        forking.enter_sandbox(keep_fd=fd, timeout_s=timeout_s, memory_mb=512, output_chars=200)
        try:
            scope = namespace if isinstance(namespace, dict) else dict(namespace)
            value = eval(compile(ast.Expression(node), "<cursor>", "eval"), scope)  # noqa: S307 - fenced child
            raw = _raw(site, value, max_names, in_fork=True)
            report = {"kind": raw.kind, "names": raw.names, "required": raw.required, "soft": raw.soft,
                      "note": raw.note or "evaluated in a fork", "positional_only": raw.positional_only,
                      "positional_or_keyword": raw.positional_or_keyword, "var_positional": raw.var_positional,
                      "closes": raw.closes}
        except BaseException as exc:  # noqa: BLE001 - report whatever happened
            report = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        data = json.dumps(report, default=str).encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    return main


def _final(raw: _Raw, site: Site, extra: list[str], max_names: int) -> Answer:
    """The answer for what is typed now (and, for a call, the keywords already given)."""
    if not raw.kind:
        return Answer(note=raw.note)
    names = raw.names
    if raw.kind == "parameter" and site.positional > raw.positional_only:
        # ``f(1, 2, `` has filled the first positional parameters: naming them again is a TypeError
        names = names[min(site.positional - raw.positional_only, raw.positional_or_keyword):]
    names = [n for n in names if n.startswith(site.typed)]
    if raw.kind == "column" and raw.closes and not site.in_list:
        # ``df['a', 'B']`` is a KeyError on flat columns: the head is the label and its ``]``, or the
        # model goes on ``'temp_c', "B", "B"`` after the right label and the whole is never shown.
        names = [n + "]" for n in names]
    if raw.kind == "attribute" and not site.typed.startswith("_") and any(not n.startswith("_") for n in names):
        # As IPython and Jedi complete: private and dunder attributes once a ``_`` is typed. A weak
        # model held to every attribute picks ``__class__`` after ``inv.`` as often as anything.
        names = [n for n in names if not n.startswith("_")]
    required = raw.required or (raw.soft and bool(site.typed))
    if raw.kind == "parameter":
        names = [n for n in names if n[:-1] not in site.given]
        slot = site.positional - raw.positional_only
        if _keyword_only_here(raw, site):
            # No positional argument can come: every positional parameter is filled and there is no
            # ``*args`` (``smooth(wave, `` of ``smooth(x, *, window_len=5)``: "takes 1 positional
            # argument but 2 were given"), or a keyword was given already ("positional argument
            # follows keyword argument"). The argument must begin with a keyword's name.
            required = bool(names)
        else:
            # A positional argument may come instead of a keyword: the names at an expression's start too.
            if 0 <= slot < raw.positional_or_keyword and raw.names[slot][:-1] in _LABEL_PARAMETERS:
                names += [n for n in raw.labels if n.startswith(site.typed)]  # ``df.groupby(`` fills ``by``
            names += [n for n in extra if n not in names]
            required = False
    return _limit(Answer(raw.kind, list(dict.fromkeys(names)), typed=site.typed, required=required,
                         note=raw.note), max_names)


def _keyword_only_here(raw: _Raw, site: Site) -> bool:
    """Whether the argument at the cursor can only be a keyword argument (see ``_final``)."""
    if site.positional < 0:  # ``f(*xs, ``: how many positions are filled is not known
        return False
    if site.given:
        return True
    return not raw.var_positional and site.positional - raw.positional_only >= raw.positional_or_keyword


def _root(node: ast.expr) -> Optional[str]:
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return None


def _trusted(cls: type) -> bool:
    module = getattr(cls, "__module__", None)
    return isinstance(module, str) and module.split(".")[0] in _TRUSTED_ROOTS


def _trusted_module(mod: types.ModuleType) -> bool:
    name = vars(mod).get("__name__")
    return isinstance(name, str) and name.split(".")[0] in _TRUSTED_ROOTS


def _plain_class(obj: Any) -> bool:
    """A class whose metaclass is ``type`` (or trusted): reading its attributes runs no user code."""
    return isinstance(obj, type) and (type(obj) is type or _trusted(type(obj)))


_BINDABLE = (types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType,
             types.WrapperDescriptorType, types.ClassMethodDescriptorType, classmethod, staticmethod, type,
             types.ModuleType)


def _lookup(node: ast.expr, namespace: Mapping[str, Any]) -> Any:
    """The value of a name or attribute chain, read without running user code; else ``_Unsafe``."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in namespace:
            return namespace[node.id]
        if hasattr(builtins, node.id):
            return getattr(builtins, node.id)
        raise _Undefined(repr(node.id))
    if not isinstance(node, ast.Attribute):
        raise _Unsafe
    base = _lookup(node.value, namespace)
    attr = node.attr
    if isinstance(base, types.ModuleType):
        found = vars(base).get(attr, _MISSING)
        if found is not _MISSING:
            return found
        if _trusted_module(base):
            return getattr(base, attr)  # lazy submodules of numpy, pandas, ...
        raise _Unsafe
    trusted = _trusted(type(base))
    if not (trusted or _plain_class(base) or type(base).__getattribute__ is object.__getattribute__):
        raise _Unsafe
    found = inspect.getattr_static(base, attr, _MISSING)
    if found is _MISSING:
        if trusted:
            return getattr(base, attr)  # e.g. a pandas column read as an attribute
        raise _Unsafe
    if not hasattr(type(found), "__get__"):
        return found  # a plain value: what getattr would return, no code run
    if isinstance(found, _BINDABLE):
        return getattr(base, attr)  # binding a function runs no user code
    raise _Unsafe  # a property or another descriptor: its code runs on access


_MISSING = object()


# pandas' own accessors; ``dir()`` of a frame instantiates every registered one (``hasattr``),
# so a frame with a user-registered accessor is listed in a fork.
_PANDAS_ACCESSORS = frozenset({"sparse", "cat", "dt", "str", "struct", "list", "plot"})


def _dir_safe(value: Any) -> bool:
    if isinstance(value, types.ModuleType):
        return _trusted_module(value) or (type(value) is types.ModuleType and "__dir__" not in vars(value))
    accessors = inspect.getattr_static(type(value), "_accessors", None)
    if isinstance(accessors, (set, frozenset)) and not accessors <= _PANDAS_ACCESSORS:
        return False
    return _trusted(type(value)) or _plain_class(value)


def _signature_safe(value: Any) -> bool:
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return True
    if isinstance(value, types.MethodType):
        return isinstance(value.__func__, (types.FunctionType, types.BuiltinFunctionType))
    return _plain_class(value) or _trusted(type(value))


def _raw(site: Site, value: Any, max_names: int, *, in_fork: bool = False) -> _Raw:
    """The heads of ``value`` for ``site``; raises ``_Unsafe`` when that could run user code here
    (``in_fork``: it may, this is the fenced child)."""
    if site.kind == "attribute":
        if not in_fork and not _dir_safe(value):
            raise _Unsafe
        return _Raw("attribute", _attributes(value, ""))
    if site.kind == "column":
        if not in_fork and not (_trusted(type(value)) or type(value) is dict):
            raise _Unsafe
        return _columns(site, value, max_names)
    if site.kind == "parameter":
        if not in_fork and not _signature_safe(value):
            raise _Unsafe
        raw = _parameters(value)
        labels = _frame_labels(value, max_names)
        return dataclasses.replace(raw, kind="parameter", labels=labels) if labels else raw
    return _Raw("", note="nothing to hold the cursor to")


def _attributes(value: Any, typed: str) -> list[str]:
    """``dir(value)``: public names first, then private, then dunder names."""
    names = [n for n in dir(value) if isinstance(n, str) and n.isidentifier() and n.startswith(typed)]
    public = sorted(n for n in names if not n.startswith("_"))
    private = sorted(n for n in names if n.startswith("_") and not n.startswith("__"))
    dunder = sorted(n for n in names if n.startswith("__"))
    return list(dict.fromkeys(public + private + dunder))


def _labels(values: Any, max_names: int) -> Optional[list[str]]:
    """Labels rendered as Python literals; None when there are more than ``max_names``."""
    out: list[str] = []
    for i, label in enumerate(values):
        if i >= max_names:
            return None
        out.extend(_literals(label))
    return out


def _literals(label: Any) -> list[str]:
    if isinstance(label, str):
        single = repr(label)
        if single.startswith("'") and '"' not in label and "\\" not in single:
            return [single, f'"{label}"']
        return [single]
    if isinstance(label, bool):
        return [repr(label)]
    if isinstance(label, numbers.Integral):  # int, numpy integers
        return [str(int(label))]
    if isinstance(label, tuple) and len(label) <= 8:
        text = repr(tuple(label))
        try:
            if ast.literal_eval(text) == label:
                return [text]
        except (ValueError, SyntaxError):
            pass
    return []


def _columns(site: Site, value: Any, max_names: int) -> _Raw:
    pd = sys.modules.get("pandas")
    soft = closes = False
    loc = site.accessor == "loc"
    if pd is not None and isinstance(value, pd.DataFrame):
        labels = _labels(value.columns, max_names)
        closes = not loc and not isinstance(value.columns, pd.MultiIndex)
    elif pd is not None and not loc and type(value).__name__ == "DataFrameGroupBy":
        labels = _labels(getattr(value, "obj").columns, max_names)
        closes = not isinstance(getattr(value, "obj").columns, pd.MultiIndex)
    elif pd is not None and isinstance(value, pd.Series):
        if isinstance(value.index, pd.RangeIndex):
            return _Raw("", note="a Series with a range index: positions, not labels")
        labels, soft = _labels(value.index, max_names), True
    elif isinstance(value, dict) and not loc:
        labels, soft = _labels(list(value.keys())[: max_names + 1], max_names), True
    else:
        return _Raw("", note=f"no labels known for a {type(value).__name__}")
    if labels is None:
        return _Raw("", note=f"more than {max_names} labels")
    # A frame's ``[`` takes a label; a dict's or Series' may take a variable: held once a quote is typed.
    return _Raw("column", list(dict.fromkeys(labels)), required=not soft, soft=soft, closes=closes)


def _parameters(value: Any) -> _Raw:
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return _Raw("", note="no signature")
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return _Raw("", note="the callable takes **kwargs: any keyword may come")
    kinds = [p.kind for p in params]
    return _Raw("parameter", [p.name + "=" for p in params
                              if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)],
                required=False, positional_only=kinds.count(inspect.Parameter.POSITIONAL_ONLY),
                positional_or_keyword=kinds.count(inspect.Parameter.POSITIONAL_OR_KEYWORD),
                var_positional=inspect.Parameter.VAR_POSITIONAL in kinds)


# pandas' parameters that take column labels: at their place in a frame method's call, a string
# the model begins is held to the frame's labels (``constraint._holds`` in the backend).
_LABEL_PARAMETERS = frozenset({"by", "on", "left_on", "right_on", "columns", "column", "keys", "subset", "x", "y",
                               "index", "values", "id_vars", "value_vars"})


def _callee_labels(expr: str, namespace: Mapping[str, Any], max_names: int) -> list[str]:
    """The labels of the frame callee ``expr`` is a method of, when reading it runs no user
    code (no fork for this: a keyword's value is any expression, the labels only help). An
    accessor (``df.plot``) is a descriptor that is not read: the frame before it on the chain is."""
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return []
    while isinstance(node, (ast.Attribute, ast.Name)):
        try:
            labels = _frame_labels(_lookup(node, namespace), max_names)
        except Exception:  # noqa: BLE001 - _Unsafe, _Undefined: try the value before the dot
            labels = []
        if labels or isinstance(node, ast.Name):
            return labels
        node = node.value
    return []


def _frame_labels(value: Any, max_names: int) -> list[str]:
    """The column labels, as literals, of the pandas frame ``value`` is a method of (or a method
    of an accessor of: ``df.plot.bar``); [] for anything else."""
    pd = sys.modules.get("pandas")
    if pd is None:
        return []
    # Types only, and attributes read statically: ``value`` may be any object of the user's, and
    # reading it must run none of its code (this runs in the kernel itself, not in a fork).
    owner = value.__self__ if type(value) in (types.MethodType, types.BuiltinMethodType) else value
    if not issubclass(type(owner), pd.DataFrame) and _trusted(type(owner)):
        owner = inspect.getattr_static(owner, "_parent", None)  # pandas' accessors keep their frame there
    if not issubclass(type(owner), pd.DataFrame):
        return []
    return _labels(owner.columns, max_names) or []


def _name_heads(namespace: Mapping[str, Any], before: str, after: str, notebook: Sequence[str],
                hidden: Container[str], typed: str, max_names: int) -> list[str]:
    """Bound names, then the identifiers of the cell and notebook, builtins and keywords."""
    heads: dict[str, None] = {}
    for name in list(namespace.keys()):
        if isinstance(name, str) and name.startswith(typed) and name.isidentifier() and name not in hidden:
            heads[name] = None
    # Names the cell and the notebook bind or use that the kernel may not have yet (locals of a
    # function being written, cells not run): counted in so that they are not forbidden.
    text = before + "\n" + after + "\n" + "\n".join(notebook)
    for word in _IDENT.findall(text[:500_000]):
        if word.startswith(typed):
            heads[word] = None
    for name in dir(builtins):
        if not name.startswith("_") and name.startswith(typed):
            heads[name] = None
    for name in keyword.kwlist + list(getattr(keyword, "softkwlist", [])):
        if name.startswith(typed) and name != "_":
            heads[name] = None
    return list(heads)


def _limit(answer: Answer, max_names: int) -> Answer:
    if answer.kind and len(answer.names) > max_names:
        return Answer(note=f"more than {max_names} names: none sent (a cut list would forbid names that exist)")
    if answer.kind and not answer.names:
        return Answer(note=answer.note or f"no {answer.kind} starts with {answer.typed!r}")
    return answer
