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
guess), inside an unterminated string, or when the model did not end the candidate itself (cut
by the token limit, it may be anywhere in an expression). A comment the candidate ends with stays
after the closers (one made only of ``#`` and spaces is dropped).

``opened_and_left_open`` tells the other case apart: an unfinished cell is a fair "incomplete"
suggestion when the user opened what is unfinished (a block header, a bracket before the cursor),
but not when the candidate opened a bracket itself and never closed it (``[0, 3, 2, 2, 4, 4, 1``).
"""

from __future__ import annotations

import io
import tokenize

__all__ = ["PAIRS", "close_brackets", "opened_and_left_open", "trim_tail", "scan_brackets", "no_space_after_opener"]

PAIRS = {"(": ")", "[": "]", "{": "}"}
_PAIRS = PAIRS
_CLOSERS = set(_PAIRS.values())
_OPERAND_TYPES = (tokenize.NAME, tokenize.NUMBER, tokenize.STRING)


def close_brackets(prefix: str, candidate: str, suffix: str, *, ended_by_model: bool = True) -> str:
    """``candidate`` with the closers of the brackets open at its end appended, when that is the
    only thing that keeps ``prefix + candidate + suffix`` from being a complete statement.
    ``ended_by_model``: the model ended it (EOS or a stop), rather than the token limit."""
    if not ended_by_model:
        return candidate
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
    closers = "".join(_PAIRS[b] for b in reversed(open_at_end))
    code, comment = _split_trailing_comment(prefix, candidate)
    if comment.strip(" \t#"):
        return code.rstrip(" \t") + closers + "  " + comment.lstrip(" \t")
    return code.rstrip(" \t") + closers


def no_space_after_opener(prefix: str, candidate: str) -> str:
    """``candidate`` without the spaces it begins with right after an opening bracket
    (``stock[`` + `` 'SKU-031'``): PEP 8 has none there, and a user would delete them. Spaces
    before a line break or a comment stay (the model is laying out a bracket over lines)."""
    if not prefix or prefix[-1] not in _PAIRS or not candidate.startswith(" "):
        return candidate
    rest = candidate.lstrip(" ")
    return rest if rest and rest[0] not in "\n#" else candidate


def trim_tail(candidate: str, suffix: str) -> str:
    """``candidate`` without the blank and comment-only lines it ends in (and a comment its last
    line ends in) when text follows the cursor on its line: that text would land after them,
    commented out or on a line of its own (``'apr'\n    #`` before the ``]`` of ``loc['shop', ``)."""
    if not suffix.split("\n", 1)[0].strip():
        return candidate
    lines = candidate.split("\n")
    while len(lines) > 1 and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        lines.pop()
    text = "\n".join(lines)
    code, comment = _split_trailing_comment("", text)
    return (code if comment else text).rstrip(" \t")


def opened_and_left_open(prefix: str, candidate: str) -> bool:
    """Whether ``candidate`` opens a bracket that is still open at its end (closing the user's
    brackets first, as ``).sum()`` after ``groupby(`` does, is not that)."""
    before, _ = _open_brackets(prefix)
    after, last = _open_brackets(prefix + candidate)
    if last is None and not after:
        return False
    # The user's brackets the candidate never closed are the bottom of ``after``; what is above
    # the lowest depth the candidate's text reached is its own.
    return len(after) > _lowest_depth(prefix, candidate, len(before))


def _lowest_depth(prefix: str, candidate: str, depth: int) -> int:
    """The fewest brackets open at any point of ``candidate``'s text (after ``prefix``, which
    leaves ``depth`` open)."""
    boundary = len(prefix)
    source = prefix + candidate
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    lowest = depth
    stack = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.OP:
                continue
            if tok.string in _PAIRS:
                stack += 1
            elif tok.string in _CLOSERS:
                stack -= 1
                if starts[min(tok.start[0] - 1, len(starts) - 1)] + tok.start[1] >= boundary:
                    lowest = min(lowest, stack)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return lowest


def _split_trailing_comment(prefix: str, candidate: str) -> tuple[str, str]:
    """(candidate without the comment its last line ends in, that comment); the comment must
    start inside the candidate."""
    source = prefix + candidate
    comment_start = -1
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comment_start = offsets[tok.start[0] - 1] + tok.start[1]
            elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.DEDENT) and tok.string.strip():
                comment_start = -1
    except (tokenize.TokenError, SyntaxError):
        pass
    cut = comment_start - len(prefix)
    if comment_start < 0 or cut < 0:
        return candidate, ""
    return candidate[:cut], candidate[cut:]


def _open_brackets(source: str) -> tuple[list[str], "tokenize.TokenInfo | None"]:
    """(brackets open at the end of ``source``, its last significant token); ([], None) when the
    source cannot be read (an unterminated string, a closer that matches nothing)."""
    scanned = scan_brackets(source)
    return scanned if scanned is not None else ([], None)


def scan_brackets(source: str) -> "tuple[list[str], tokenize.TokenInfo | None] | None":
    """(brackets open at the end of ``source``, its last significant token); None when the
    source cannot be read (an unterminated string, a closer that matches nothing)."""
    stack: list[str] = []
    last = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.OP and tok.string in _PAIRS:
                stack.append(tok.string)
            elif tok.type == tokenize.OP and tok.string in _CLOSERS:
                if not stack or _PAIRS[stack.pop()] != tok.string:
                    return None
            if tok.type == tokenize.ERRORTOKEN and tok.string.strip() in ("'", '"'):
                return None  # an unterminated single-line string
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER) and tok.string.strip():
                last = tok
    except tokenize.TokenError as exc:
        if "string" in str(exc).lower():  # EOF in a multi-line string
            return None
        # "EOF in multi-line statement": the brackets read so far are the open ones
    except (SyntaxError, IndentationError):
        return None
    return stack, last
