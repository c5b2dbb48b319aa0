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

from .protocol import CompletionContext

__all__ = [
    "CELL_SEPARATOR",
    "FimFormat",
    "FIM_FORMATS",
    "Prompt",
    "detect_fim",
    "linearise",
    "build_prompt",
    "stop_strings",
    "find_stop",
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
    head, tail = linearise(context)
    if fim is None:
        head = _keep_end(head, max_prompt_tokens, count_tokens)
        text = head
    else:
        tail = _keep_start(tail, max_prompt_tokens // 4, count_tokens)
        head = _keep_end(head, max_prompt_tokens - count_tokens(tail) - 3, count_tokens)
        text = f"{fim.prefix}{head}{fim.suffix}{tail}{fim.middle}"
    return Prompt(text=text, fim=fim is not None, stops=stop_strings(context, extra_stops))


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


def stop_strings(context: CompletionContext, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Where a suggestion ends: at the next cell, at a blank-line run, and, when the cursor sits
    before text on the same line, at the end of that line."""
    stops = ["\n# In[", "\n\n\n", *extra]
    rest_of_line = context.suffix.split("\n", 1)[0]
    if rest_of_line.strip():
        stops.append("\n")
    return tuple(dict.fromkeys(s for s in stops if s))


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


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
