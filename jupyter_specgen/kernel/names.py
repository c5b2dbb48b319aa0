"""The names a piece of code refers to and the names it assigns, found by parsing it.

Code at the cursor is usually incomplete (``df.groupby(``), so when ``ast`` cannot parse it the
names come from the tokenizer instead, which reads as far as it can.
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize

__all__ = ["referenced_names", "assigned_names"]


def referenced_names(code: str) -> list[str]:
    """Names that ``code`` reads, nearest the end first (the cursor is at the end).

    Attribute chains count by their root (``df.price.mean()`` → ``df``); names only assigned
    are left out; builtins are not filtered (the kernel knows what it has).
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return _names_by_tokens(code)
    loads: dict[str, tuple[int, int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Load, ast.Del)):
            pos = (node.lineno, node.col_offset)
            if pos > loads.get(node.id, (-1, -1)):
                loads[node.id] = pos
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            pos = (node.lineno, node.col_offset)
            if pos > loads.get(node.target.id, (-1, -1)):
                loads[node.target.id] = pos
    return sorted(loads, key=loads.__getitem__, reverse=True)


def assigned_names(code: str) -> list[str]:
    """Names that ``code`` binds at the top level of the cell, in order of first binding.

    Covers assignments (plain, augmented, annotated, unpacking, walrus), ``for`` and ``with``
    targets, imports, and function and class definitions, also inside top-level ``if``/``for``/
    ``while``/``try``/``with`` blocks; not names bound inside functions or comprehensions.
    Code that does not parse assigns nothing.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    found: dict[str, None] = {}
    _collect_bindings(tree.body, found)
    return list(found)


def _collect_bindings(body: list[ast.stmt], found: dict[str, None]) -> None:
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.setdefault(stmt.name)
            continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name != "*":
                    found.setdefault(alias.asname or alias.name.split(".")[0])
            continue
        stores = [
            node
            for node in _walk_outside_scopes(stmt)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
        ]
        for node in sorted(stores, key=lambda n: (n.lineno, n.col_offset)):
            found.setdefault(node.id)
        for child in ("body", "orelse", "finalbody", "handlers"):
            nested = getattr(stmt, child, None)
            if isinstance(nested, list) and nested and isinstance(nested[0], ast.stmt):
                _collect_bindings(nested, found)
            elif child == "handlers" and nested:
                for handler in nested:
                    if handler.name:
                        found.setdefault(handler.name)
                    _collect_bindings(handler.body, found)


def _walk_outside_scopes(stmt: ast.stmt):
    """The nodes of ``stmt`` itself: not its nested statements, not nested scopes."""
    stack: list[ast.AST] = [stmt]
    while stack:
        node = stack.pop()
        yield node
        for name, value in ast.iter_fields(node):
            if node is stmt and name in ("body", "orelse", "finalbody", "handlers"):
                continue
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST) and not isinstance(
                    child, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
                ):
                    stack.append(child)


def _names_by_tokens(code: str) -> list[str]:
    """NAME tokens that are not keywords and do not follow a dot, nearest the end first."""
    seen: dict[str, int] = {}
    previous = ""
    index = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.NAME and previous != "." and not keyword.iskeyword(tok.string):
                seen[tok.string] = index
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
                previous = tok.string
            index += 1
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass  # unterminated brackets or strings at the cursor: keep what was read
    return sorted(seen, key=seen.__getitem__, reverse=True)
