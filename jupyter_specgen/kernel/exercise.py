"""Make a candidate's run check what it claims to: unfinished cells closed and run, function bodies called.

Two cases where running ``prefix + candidate + suffix`` as it is says too little:

- the cell is an unfinished statement in the sense of ``codeop`` (the user is inside an open block
  or bracket: ``for row in sales.itertuples():`` with nothing after). It does not parse, but it is
  not an error either. ``prepare`` closes it (a string's quotes, the open brackets, a body of
  ``break``/``pass`` under a trailing header, a ``finally`` under an open ``try``) so that what is
  there runs; a NameError in the header is still caught. A SyntaxError that is not an unfinished
  statement, or one that closing does not cure, stays the real error.
- the cursor is in a function or method body: running the cell only defines it. ``exercise``
  then calls it with the arguments of the notebook's own calls of it (``clean(sales)``;
  ``obj.method(x)`` on an instance of the class), each in the same fenced child and under its
  deadline; with no call found, the candidate is only "defined".

Runs in the forked, fenced child (``validate._run``).
"""

from __future__ import annotations

import ast
import codeop
import inspect
import io
import re
import tokenize
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["Target", "Prepared", "prepare", "unfinished", "close", "find_target", "calls_of", "exercise"]

_OPENERS = {"(": ")", "[": "]", "{": "}"}
_LOOPS = ("for", "while")
_HEADERS = frozenset({"for", "while", "if", "elif", "with", "def", "class", "except"})
_MAX_CALLS = 3


@dataclass(frozen=True)
class Target:
    """The function whose body holds the cursor: top-level ``name``, or method ``name`` of class ``owner``."""

    name: str
    owner: str = ""  # the class, for a method
    is_async: bool = False


@dataclass(frozen=True)
class Prepared:
    """What to run: the parsed cell (closed if it was unfinished) and the function to exercise."""

    tree: ast.Module
    incomplete: bool  # the cell was an unfinished statement and was closed to run it
    target: Optional[Target]
    calls_in_cell: bool  # the cell itself calls the target outside its body


def prepare(source: str, *, filename: str, cursor: tuple[int, int] = (0, 0)) -> Prepared:
    """Parse ``source``; close it first when it is unfinished. Raises the real SyntaxError otherwise.

    ``cursor``: (1-based line, column) of the cursor in ``source``; (0, 0) when unknown.
    """
    incomplete = False
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        if not unfinished(source):
            raise
        closed = close(source)
        if closed is None:
            raise
        try:
            tree = ast.parse(closed, filename=filename)
        except SyntaxError:
            raise error from None
        incomplete = True
    target = find_target(tree, cursor) if cursor[0] else None
    calls_in_cell = target is not None and _called_outside(tree, target)
    return Prepared(tree=tree, incomplete=incomplete, target=target, calls_in_cell=calls_in_cell)


def unfinished(source: str) -> bool:
    """Whether ``source`` is an unfinished statement (``codeop`` would wait for more lines)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return codeop.compile_command(source, "<unfinished>", "exec") is None
    except (SyntaxError, ValueError, OverflowError, MemoryError):
        return False


def close(source: str) -> Optional[str]:
    """``source`` with what it left open closed, ready to parse; None when it cannot be read."""
    text = source.rstrip()
    quote = _open_triple_quote(text)
    if quote:
        text += quote
    toks = _tokens(text)
    if toks is None:
        return None
    stack: list[str] = []
    for tok in toks:
        if tok.type == tokenize.OP and tok.string in _OPENERS:
            stack.append(tok.string)
        elif tok.type == tokenize.OP and tok.string in (")", "]", "}"):
            if not stack:
                return None
            stack.pop()
    if stack:
        closers = "".join(_OPENERS[o] for o in reversed(stack))
        # after a comment on the last line the closers would be commented out; a newline inside
        # brackets is only a continuation
        text += ("\n" + closers) if toks and _ends_in_comment(toks) else closers
        toks = _tokens(text)
        if toks is None:
            return None
    significant = [t for t in toks if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT,
                                                    tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)]
    if not significant:
        return _close_open_try(text)
    header = _logical_line_start(toks, significant[-1])
    words = re.match(r"\s*(?:async\s+)?(\w*)", text.splitlines()[header.start[0] - 1])
    keyword = words.group(1) if words else ""
    is_colon = significant[-1].type == tokenize.OP and significant[-1].string == ":"
    if keyword in _HEADERS and not is_colon and stack:
        text += ":"  # ``for row in sales.itertuples(`` closed to ``...():``
        is_colon = True
    if is_colon:
        indent = _indent_of(text, header.start[0])
        # a loop's body of ``break`` checks the header once instead of running every iteration
        body = "break" if keyword in _LOOPS else "pass"
        text += "\n" + indent + "    " + body
    return _close_open_try(text)


def _tokens(text: str) -> Optional[list[tokenize.TokenInfo]]:
    toks: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            toks.append(tok)
    except tokenize.TokenError:
        pass  # EOF in a multi-line statement: what was read is what we need
    except (SyntaxError, ValueError):
        return None
    return toks


def _open_triple_quote(text: str) -> str:
    try:
        for _ in tokenize.generate_tokens(io.StringIO(text).readline):
            pass
    except tokenize.TokenError as exc:
        if "string" in str(exc.args[0] if exc.args else ""):
            pos = exc.args[1] if len(exc.args) > 1 else None
            if isinstance(pos, tuple):
                line = text.splitlines()[pos[0] - 1] if pos[0] - 1 < len(text.splitlines()) else ""
                rest = line[pos[1]:].lstrip("rRbBuUfF")
                if rest[:3] in ("'''", '"""'):
                    return rest[:3]
    except (SyntaxError, ValueError):
        pass
    return ""


def _ends_in_comment(toks: list[tokenize.TokenInfo]) -> bool:
    for tok in reversed(toks):
        if tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.DEDENT):
            continue
        return tok.type == tokenize.COMMENT
    return False


def _logical_line_start(toks: list[tokenize.TokenInfo], last: tokenize.TokenInfo) -> tokenize.TokenInfo:
    start = None
    for tok in toks:
        if tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.COMMENT):
            if tok.type == tokenize.NEWLINE:
                start = None
            continue
        if start is None:
            start = tok
        if tok is last:
            break
    return start or last


def _indent_of(text: str, line: int) -> str:
    lines = text.splitlines()
    row = lines[line - 1] if 0 < line <= len(lines) else ""
    return row[: len(row) - len(row.lstrip())]


_TRY = re.compile(r"^(\s*)try\s*:\s*(#.*)?$")


def _close_open_try(text: str) -> str:
    """A ``finally: pass`` under each ``try:`` block that runs to the end of the cell unhandled."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):  # innermost (last) first: its ``finally`` goes first
        m = _TRY.match(lines[i])
        if not m:
            continue
        indent = m.group(1)
        for later in lines[i + 1:]:
            stripped = later.lstrip()
            if not stripped or stripped.startswith("#") or len(later) - len(stripped) > len(indent):
                continue  # inside the try block
            break  # dedented: a handler, or an error the parser will name
        else:
            text += "\n" + indent + "finally:\n" + indent + "    pass"
    return text


def find_target(tree: ast.Module, cursor: tuple[int, int]) -> Optional[Target]:
    """The top-level function or method of a top-level class whose body holds ``cursor``."""
    line, col = cursor
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _in_body(node, line, col):
            return Target(node.name, is_async=isinstance(node, ast.AsyncFunctionDef))
        if isinstance(node, ast.ClassDef) and node.lineno <= line <= (node.end_lineno or 0):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _in_body(item, line, col):
                    return Target(item.name, owner=node.name, is_async=isinstance(item, ast.AsyncFunctionDef))
    return None


def _in_body(fn: ast.AST, line: int, col: int) -> bool:
    first = fn.body[0]
    if line < first.lineno or line > (fn.end_lineno or 0):
        return False
    if line == fn.lineno:  # a one-line def: past the colon
        return col >= first.col_offset
    return True


def _called_outside(tree: ast.Module, target: Target) -> bool:
    """Whether the cell's own top-level code calls the target (then running the cell exercised it)."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and _calls(node, target):
                return True
    return False


def _calls(node: ast.Call, target: Target) -> bool:
    func = node.func
    if not target.owner:
        return isinstance(func, ast.Name) and func.id == target.name
    if target.name == "__init__":
        return isinstance(func, ast.Name) and func.id == target.owner
    return isinstance(func, ast.Attribute) and func.attr == target.name


def calls_of(target: Target, sources: Sequence[str], *, transform: Optional[Callable[[str], str]] = None
             ) -> list[tuple[ast.Call, str]]:
    """The notebook's calls of ``target``, as (node, source text), first ones first, no duplicates."""
    found: dict[str, ast.Call] = {}
    for source in sources:
        try:
            code = transform(source) if transform is not None else source
            tree = ast.parse(code)
        except Exception:  # noqa: BLE001 - a cell that does not parse has no calls to offer
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _calls(node, target):
                text = ast.get_source_segment(code, node) or ast.unparse(node)
                found.setdefault(text, node)
    return [(node, text) for text, node in found.items()]


def exercise(target: Target, namespace: dict, calls: list[tuple[ast.Call, str]], *, filename: str
             ) -> tuple[str, Optional[BaseException], str]:
    """Call the freshly defined target with each call's arguments.

    Returns (what happened: "exercised", "defined" or "raised", the exception, the call's text).
    A call whose arguments cannot be evaluated in the live state is passed over.
    """
    if target.is_async:
        return "defined", None, ""
    fn = _callable(target, namespace)
    if fn is None:
        return "defined", None, ""
    made = []
    for node, text in calls[:_MAX_CALLS * 3]:
        if len(made) >= _MAX_CALLS:
            break
        try:
            receiver, args, kwargs = _arguments(target, node, namespace, filename)
        except Exception:  # noqa: BLE001 - e.g. a NameError in the arguments: not this body's fault
            continue
        try:
            if target.owner and target.name != "__init__":
                if receiver is _NO_RECEIVER or type(receiver).__name__ != target.owner:
                    continue
                result = fn(receiver, *args, **kwargs)
            else:
                result = fn(*args, **kwargs)
            if inspect.isgenerator(result):
                for _ in zip(range(100), result):  # a generator's body runs only when iterated
                    pass
        except BaseException as exc:  # noqa: BLE001 - the body's failure is what we came for
            return "raised", exc, text
        made.append(text)
    if not made:
        return "defined", None, ""
    return "exercised", None, ", ".join(made)


_NO_RECEIVER = object()


def _callable(target: Target, namespace: dict) -> Optional[Callable[..., Any]]:
    if not target.owner:
        fn = namespace.get(target.name)
        return fn if inspect.isfunction(fn) else None
    cls = namespace.get(target.owner)
    if not isinstance(cls, type):
        return None
    if target.name == "__init__":
        return cls
    raw = cls.__dict__.get(target.name)
    if isinstance(raw, staticmethod):
        fn = raw.__func__
        return lambda _receiver, *a, **k: fn(*a, **k)
    if isinstance(raw, classmethod):
        fn = raw.__func__
        return lambda _receiver, *a, **k: fn(cls, *a, **k)
    return raw if inspect.isfunction(raw) else None


def _arguments(target: Target, node: ast.Call, namespace: dict, filename: str) -> tuple[Any, tuple, dict]:
    """(receiver, args, kwargs) of ``node`` evaluated in ``namespace``."""
    pack = ast.Call(func=ast.Name(id="__specgen_pack__", ctx=ast.Load()), args=node.args, keywords=node.keywords)
    expr = ast.fix_missing_locations(ast.Expression(pack))
    scope = dict(namespace)
    scope["__specgen_pack__"] = lambda *a, **k: (a, k)
    args, kwargs = eval(compile(expr, "<notebook call>", "eval"), scope)  # noqa: S307 - in the fenced child
    receiver: Any = _NO_RECEIVER
    if target.owner and target.name != "__init__" and isinstance(node.func, ast.Attribute):
        receiver_expr = ast.fix_missing_locations(ast.Expression(node.func.value))
        receiver = eval(compile(receiver_expr, "<notebook call>", "eval"), scope)  # noqa: S307
    return receiver, args, kwargs
