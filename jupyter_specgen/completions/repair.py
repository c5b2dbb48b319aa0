"""Close the brackets a candidate leaves open at the end of the line. Pure.

A small model held to the live state often writes exactly the right head and then stops:
``weather[`` → ``'temp_c'``, ``sales.groupby(`` → ``'region'``. The cell is then an unfinished
statement, which validation can only call "incomplete", and the user has to type the closer
themself. When the cursor is at the end of its line and the candidate ends on a complete operand
(a name, a number, a string, a closing bracket), the closers of the brackets still open are
appended to the candidate; validation then runs the repaired text, so what is shown either runs
or is not shown at all.

Nothing is repaired when the text after the cursor already closes them, when the candidate ends
on an operator, a comma or an opening bracket (the statement is not finished, closing it would
guess), or inside an unterminated string.
"""

from __future__ import annotations

import io
import tokenize

__all__ = ["close_brackets"]

_PAIRS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = set(_PAIRS.values())
_OPERAND_TYPES = (tokenize.NAME, tokenize.NUMBER, tokenize.STRING)


def close_brackets(prefix: str, candidate: str, suffix: str) -> str:
    """``candidate`` with the closers of the brackets open at its end appended, when that is the
    only thing that keeps ``prefix + candidate + suffix`` from being a complete statement."""
    line_after = suffix.split("\n", 1)[0]
    if line_after.strip() or not candidate.strip() or candidate.endswith("\n"):
        return candidate  # text follows on the line (it may close them), or the line was ended
    open_at_end, last = _open_brackets(prefix + candidate)
    if not open_at_end or last is None:
        return candidate
    if _open_brackets(prefix + candidate + suffix)[0] != open_at_end:
        return candidate  # the following lines close (some of) them: not ours to close
    if not (last.type in _OPERAND_TYPES or (last.type == tokenize.OP and last.string in _CLOSERS)):
        return candidate
    if last.type == tokenize.NAME and last.string in ("and", "or", "not", "in", "is", "if", "else", "for",
                                                        "lambda", "await", "yield", "return"):
        return candidate  # a keyword that wants an operand after it
    return candidate.rstrip(" \t") + "".join(_PAIRS[b] for b in reversed(open_at_end))


def _open_brackets(source: str) -> tuple[list[str], "tokenize.TokenInfo | None"]:
    """(brackets open at the end of ``source``, its last significant token); ([], None) when the
    source cannot be read (an unterminated string, a closer that matches nothing)."""
    stack: list[str] = []
    last = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.OP and tok.string in _PAIRS:
                stack.append(tok.string)
            elif tok.type == tokenize.OP and tok.string in _CLOSERS:
                if not stack or _PAIRS[stack.pop()] != tok.string:
                    return [], None
            if tok.type == tokenize.ERRORTOKEN and tok.string.strip() in ("'", '"'):
                return [], None  # an unterminated single-line string
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER) and tok.string.strip():
                last = tok
    except tokenize.TokenError as exc:
        if "string" in str(exc).lower():  # EOF in a multi-line string
            return [], None
        # "EOF in multi-line statement": the brackets read so far are the open ones
    except (SyntaxError, IndentationError):
        return [], None
    return stack, last
