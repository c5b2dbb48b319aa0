"""Turn a notebook and a cursor into a model prompt, and the model's text back into a suggestion.

The notebook is linearised as in GIFT4Code: each cell introduced by a ``# In[ ]:`` line,
markdown cells rendered as ``#`` comments. When the tokenizer knows a fill-in-the-middle format
the text after the cursor goes into the prompt too (prefix-suffix-middle order), so the model
completes *between* what is before and after; otherwise it only sees what is before.

Everything here is pure text manipulation: no model, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .protocol import Cell, CompletionContext

__all__ = [
    "CELL_SEPARATOR",
    "FimFormat",
    "FIM_FORMATS",
    "Prompt",
    "detect_fim",
    "linearise",
    "build_prompt",
    "bound_context",
    "MAX_CHARS_PER_TOKEN",
    "SEPARATOR_STOPS",
    "OPERATOR_CHARS",
    "stop_strings",
    "mid_line",
    "find_stop",
    "CodeScanner",
    "partial_stop_length",
    "clean_completion",
]

CELL_SEPARATOR = "# In[ ]:\n"


@dataclass(frozen=True)
class FimFormat:
    prefix: str
    suffix: str
    middle: str


# Known fill-in-the-middle token sets, tried in order against the tokenizer's vocabulary.
FIM_FORMATS: tuple[FimFormat, ...] = (
    FimFormat("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder
    FimFormat("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder / SantaCoder
    FimFormat("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    FimFormat("<PRE>", "<SUF>", "<MID>"),  # CodeLlama (spaces around are part of its format)
)


def detect_fim(vocab: dict[str, int]) -> Optional[FimFormat]:
    """The model's FIM format, judged by which special tokens its tokenizer has."""
    for fmt in FIM_FORMATS:
        if all(tok in vocab for tok in (fmt.prefix, fmt.suffix, fmt.middle)):
            return fmt
    return None


def _render_cell(cell_type: str, source: str) -> str:
    if cell_type == "markdown":
        lines = source.rstrip("\n").splitlines() or [""]
        return "\n".join(f"# {line}".rstrip() for line in lines) + "\n"
    if cell_type == "raw":
        return ""
    return source if source.endswith("\n") or not source else source + "\n"


def linearise(context: CompletionContext) -> tuple[str, str]:
    """The notebook as (text before the cursor, text after it)."""
    cells = list(context.cells)
    active = context.active if 0 <= context.active < len(cells) else len(cells)
    before = []
    for cell in cells[:active]:
        rendered = _render_cell(cell.cell_type, cell.source)
        if rendered:
            before.append(CELL_SEPARATOR + rendered)
    head = "\n".join(before)
    if head:
        head += "\n"
    head += CELL_SEPARATOR
    if context.preamble:
        head += context.preamble if context.preamble.endswith("\n") else context.preamble + "\n"
    head += context.prefix

    after = [context.suffix]
    for cell in cells[active + 1 :]:
        rendered = _render_cell(cell.cell_type, cell.source)
        if rendered:
            after.append(CELL_SEPARATOR + rendered)
    tail = after[0]
    if len(after) > 1:
        tail = (tail if tail.endswith("\n") or not tail else tail + "\n") + "\n" + "\n".join(after[1:])
    return head, tail


@dataclass(frozen=True)
class Prompt:
    text: str
    fim: bool  # whether the suffix is part of the prompt
    stops: tuple[str, ...]


def build_prompt(
    context: CompletionContext,
    *,
    fim: Optional[FimFormat],
    count_tokens,
    max_prompt_tokens: int,
    extra_stops: Sequence[str] = (),
) -> Prompt:
    """The prompt for ``context``, cut to ``max_prompt_tokens`` (``count_tokens(text) -> int``).

    What is cut is the far end: the start of the notebook and the end of the text after the
    cursor. The suffix gets at most a quarter of the budget; the cursor's neighbourhood is what
    matters most.
    """
    # Counting tokens costs time in proportion to the text counted, many times over (the search
    # for the cut), so a megabyte notebook is first cut by characters to what no prompt of this
    # budget could hold.
    head, tail = linearise(bound_context(context, max_prompt_tokens * MAX_CHARS_PER_TOKEN))
    if fim is None:
        head = _keep_end(head, max_prompt_tokens, count_tokens)
        text = head
    else:
        tail = _keep_start(tail, max_prompt_tokens // 4, count_tokens)
        head = _keep_end(head, max_prompt_tokens - count_tokens(tail) - 3, count_tokens)
        text = f"{fim.prefix}{head}{fim.suffix}{tail}{fim.middle}"
    return Prompt(text=text, fim=fim is not None, stops=stop_strings(context, extra_stops))


# More characters than tokenizers pack into one token on average over a whole prompt (code BPEs
# average 3 to 4): a cut by characters at this multiple of the token budget keeps what the token
# budget keeps, except in text of very long tokens (runs of one repeated character).
MAX_CHARS_PER_TOKEN = 8


def bound_context(context: CompletionContext, max_chars: int) -> CompletionContext:
    """``context`` with at most about ``max_chars`` characters on each side of the cursor.

    Before the cursor the far end goes first: the start of the prefix, then the preamble, then
    the earliest cells; after it the end of the suffix, then the last cells. Each cell costs its
    source plus its separator, so a million empty cells are bounded too. What is cut is what the
    token budget would cut anyway; this only makes the cut cheap.
    """
    cells = context.cells
    has_active = 0 <= context.active < len(cells)
    active = context.active if has_active else len(cells)
    budget = max_chars
    prefix = context.prefix[len(context.prefix) - budget :] if len(context.prefix) > budget else context.prefix
    budget -= len(prefix)
    preamble = context.preamble[len(context.preamble) - budget :] if len(context.preamble) > budget else context.preamble
    budget -= len(preamble)
    before: list[Cell] = []
    for cell in reversed(cells[:active]):
        if budget <= 0:
            break
        source = cell.source if len(cell.source) <= budget else cell.source[len(cell.source) - budget :]
        before.append(cell if source is cell.source else Cell(cell_type=cell.cell_type, source=source))
        budget -= len(source) + len(CELL_SEPARATOR)
    before.reverse()
    budget = max_chars
    suffix = context.suffix[:budget]
    budget -= len(suffix)
    after: list[Cell] = []
    for cell in cells[active + 1 :] if has_active else ():
        if budget <= 0:
            break
        source = cell.source[:budget]
        after.append(cell if len(source) == len(cell.source) else Cell(cell_type=cell.cell_type, source=source))
        budget -= len(source) + len(CELL_SEPARATOR)
    if has_active:
        kept, index = [*before, cells[active], *after], len(before)
    else:
        kept, index = before, -1
    return CompletionContext(prefix=prefix, suffix=suffix, cells=kept, active=index, preamble=preamble)


def _keep_end(text: str, budget: int, count_tokens) -> str:
    """The longest tail of ``text`` (cut at a line start) within ``budget`` tokens."""
    if budget <= 0:
        return ""
    if count_tokens(text) <= budget:
        return text
    lines = text.splitlines(keepends=True)
    lo, hi = 0, len(lines)  # binary search for the first line to keep
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens("".join(lines[mid:])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    kept = "".join(lines[lo:])
    if not kept:  # a single line longer than the budget: keep its end by characters
        kept = text[-budget * 2 :]
        while len(kept) > 1 and count_tokens(kept) > budget:  # denser than 2 characters a token (digits)
            kept = kept[len(kept) // 4 :]
    return kept


def _keep_start(text: str, budget: int, count_tokens) -> str:
    if budget <= 0:
        return ""
    if count_tokens(text) <= budget:
        return text
    lines = text.splitlines(keepends=True)
    lo, hi = 0, len(lines)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens("".join(lines[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return "".join(lines[:lo])


# The cell separator as models write it back: ``# In[ ]:`` at a line start, but also ``In[`` after
# code on the same line, with or without the ``#`` (issue 18: ``In[`` leaked into 24 of 500
# suggestions when only ``\n# In[`` stopped). A stop on one of these also cuts the ``#`` before it.
SEPARATOR_STOPS = ("In[", "In [")


def stop_strings(context: CompletionContext, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Where a suggestion ends: at the cell separator wherever it starts, and at a blank-line run.

    Mid-line completions also end at the end of their statement; that needs the brackets and
    strings of the text, so it is ``CodeScanner``'s job (see ``mid_line``), not a stop string.
    """
    stops = [*SEPARATOR_STOPS, "\n\n\n", *extra]
    return tuple(dict.fromkeys(s for s in stops if s))


def mid_line(context: CompletionContext) -> bool:
    """Whether the cursor is inside a line: text before it on its line, or after it on its line.

    Such a completion finishes the statement it is in and stops there; at the end of a line (or
    on a blank line) it may write several statements.
    """
    before = context.prefix.rsplit("\n", 1)[-1]
    after = context.suffix.split("\n", 1)[0]
    return bool(before.strip() or after.strip())


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1 (a cell separator's ``#`` included)."""
    hits = []
    for stop in stops:
        i = text.find(stop)
        if i >= 0 and stop in SEPARATOR_STOPS:
            j = len(text[:i].rstrip(" \t"))
            i = j - 1 if j and text[j - 1] == "#" else i
        if i >= 0:
            hits.append(i)
    return min(hits) if hits else -1


# Characters of Python's operators and delimiters, brackets and quotes aside (runs of them are
# what the decoding masks bound).
OPERATOR_CHARS = frozenset("+-*/%@&|^~<>=!.,:;")
# Characters that make one operator with a ``=`` right after them (``==``, ``<=``, ``:=``, ``+=``).
_JOINS_EQUALS = frozenset("=<>!:+-*/%@&|^")
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {")": "(", "]": "[", "}": "{"}


class CodeScanner:
    """Python's lexical state over text fed to it piece by piece: open brackets, strings, comments.

    Just what the stop rules and the decoding masks need, not a tokenizer: string prefixes
    (``f``, ``r``, ``b``) are read as plain quotes (an f-string's braces are string text), and a
    closing bracket that matches nothing open is dropped (the cell above may already be broken).

    Semantics::

        scanner = CodeScanner()
        scanner.feed("f(a, [1")    # -> -1;  scanner.stack == ["(", "["], scanner.state == "code"
        scanner.feed("])\\nx")      # -> 2: that newline ends the statement
    """

    def __init__(self) -> None:
        self.stack: list[str] = []  # open brackets, innermost last
        self.quote: Optional[str] = None  # the open string's quote: one or three ' or " characters
        self.comment = False
        self.escape = False  # a backslash just before: the next character is taken literally
        self.run = 0  # how many operator characters end the code text (spaces end a run)
        self.last = ""  # the last non-space character of code (strings and comments aside)
        self.tail = ""  # the last characters of code, for the number rule of the decoding masks
        # Quote characters met in code and not resolved yet: one opens a string, two are an empty
        # string, three open a triple-quoted one; the next character decides.
        self._pending = ""
        self._closing = 0  # quote characters in a row inside a triple-quoted string
        # The statement has assigned (an ``=`` outside brackets, not part of ``==``, ``<=``, ``:=``,
        # ``+=``...); ``_eq``: a ``=`` just read that is one unless a second ``=`` follows.
        self.assigned = False
        self._eq = False
        self.unpacks = False  # a comma outside brackets before the statement's ``=``: ``a, b = ``

    def copy(self) -> "CodeScanner":
        other = CodeScanner.__new__(CodeScanner)
        other.__dict__.update(self.__dict__)
        other.stack = list(self.stack)
        return other

    @property
    def state(self) -> str:
        """``code``, ``'`` or ``"`` (inside a one-line string of that quote), or ``other``
        (triple-quoted string, comment, after a backslash): the states the masks have rules for."""
        if self._pending:
            return self._pending[0] if len(self._pending) == 1 else "code"
        if self.escape or self.comment:
            return "other"
        if self.quote is None:
            return "code"
        return self.quote if len(self.quote) == 1 else "other"

    def feed(self, text: str) -> int:
        """Advance over ``text``; return the index in it of the first newline that ends a
        statement (outside brackets, strings and comments, not after a backslash nor after a
        block header's colon), or -1."""
        end = -1
        for i, ch in enumerate(text):
            if self._step(ch) and end < 0:
                end = i
        return end

    def _code_char(self, ch: str) -> None:
        if ch in " \t":
            self.run = 0
        else:
            self.last = ch
            self.run = self.run + 1 if ch in OPERATOR_CHARS else 0
        self.tail = (self.tail + ch)[-32:]

    @property
    def assigns(self) -> bool:
        """Whether the statement read so far assigns outside brackets (``due = inv.``)."""
        return self.assigned or self._eq

    def _end_of_line(self) -> bool:
        self.run, self.tail = 0, ""
        # After a block header (``for x in y:``) the statement goes on into its body: the end is
        # the end of the body's first line, not an empty suggestion at the end of the header.
        if not self.stack:
            self.assigned = self._eq = self.unpacks = False
        return not self.stack and self.last != ":"

    def _assignment_char(self, ch: str) -> None:
        if self._eq:
            self._eq = False
            self.assigned = self.assigned or ch != "="
        if ch == ";" and not self.stack:
            self.assigned = self.unpacks = False
        elif ch == "," and not self.stack and not self.assigns:
            self.unpacks = True
        elif ch == "=" and not self.stack and not (self.run and self.last in _JOINS_EQUALS):
            self._eq = True

    def _step(self, ch: str) -> bool:
        if self._pending:
            q = self._pending[0]
            if ch == q:
                self._pending += ch
                if len(self._pending) == 3:
                    self._pending, self.quote, self._closing = "", q * 3, 0
                return False
            if len(self._pending) == 1:
                self.quote = q  # a one-line string opened; ``ch`` is its first character
            else:
                self.last, self.run, self.tail = q, 0, " "  # ``''``: an empty string, closed
            self._pending = ""
        if self.escape:
            self.escape = False
            self._closing = 0
            return False
        if self.comment:
            if ch == "\n":
                self.comment = False
                return self._end_of_line()
            return False
        if self.quote is not None:
            if ch == "\\":
                self.escape = True
            elif len(self.quote) == 1:
                if ch == "\n":  # an unterminated one-line string ends with its line
                    self.quote = None
                    return self._end_of_line()
                if ch == self.quote:
                    self.quote = None
                    self.last, self.run, self.tail = ch, 0, " "
            elif ch == self.quote[0]:
                self._closing += 1
                if self._closing == 3:
                    self.quote, self._closing = None, 0
                    self.last, self.run, self.tail = ch, 0, " "
            else:
                self._closing = 0
            return False
        if ch in "'\"":
            self._pending = ch
            return False
        if ch == "#":
            self.comment = True
            return False
        if ch == "\\":
            self.escape = True  # a line continuation
            return False
        if ch == "\n":
            return self._end_of_line()
        self._assignment_char(ch)
        if ch in _OPENERS:
            self.stack.append(ch)
        elif ch in _CLOSERS and _CLOSERS[ch] in self.stack:
            while self.stack.pop() != _CLOSERS[ch]:
                pass
        self._code_char(ch)
        return False


def partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that could grow into a stop string.

    That much text is held back from streaming until the next token decides it.
    """
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def clean_completion(text: str, context: CompletionContext) -> str:
    """Strip what the model repeated of the text around the cursor.

    Models without FIM (and sometimes with) re-type the current line or run on into the text
    that already follows the cursor; inserting that would duplicate it.
    """
    current_line = context.prefix.rsplit("\n", 1)[-1]
    if current_line.strip() and text.startswith(current_line):
        text = text[len(current_line) :]
    suffix = context.suffix
    if suffix.strip():
        # The longest end of ``text`` that is a start of the suffix (at least a few characters,
        # or the whole suffix) is an echo.
        for k in range(min(len(text), len(suffix)), 0, -1):
            if text.endswith(suffix[:k]) and (k >= 3 or k == len(suffix.rstrip())):
                text = text[: len(text) - k]
                break
    return text.rstrip() if "\n" in text else text.rstrip("\n")
