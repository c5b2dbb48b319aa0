"""Validate candidates as they finish, and show each one that holds up as soon as it does.

The backend says when each candidate is complete (``on_candidate``); ``Validation.submit`` takes
it then, drops the comment lines it ends in when text follows the cursor on its line (and the
spaces it begins with right after an opening bracket) and
closes the brackets it leaves open at the end of the line (``repair.py``), drops what
adds no code (empty, only a comment), merges duplicates (equal after normalising whitespace) and
sends it to the kernel to run in a fork. A candidate that went wrong in its syntax (it does not
parse, leaves a bracket of its own open, or was cut by the token limit) goes with its *rungs*
(``ladder.py``: it cut back to where it still parses; a whole candidate Python cannot parse is
not run at all), and the longest of them that holds up is the one shown: a weak model's right
start (``'temp_c'`` before the junk it wrote after) is kept, and nothing unproven is. After
``expr.`` the attribute a candidate begins with is also run called (``ladder.called_head``:
``gross_total`` → ``gross_total()``), since a method's name alone is not a value. A candidate
the model ended itself that parses is run as written: its runtime error is the model's real
mistake. Candidates submitted in the
same turn of the event loop go in one ``validate`` request (the kernel forks them from one
snapshot); later ones get a request of their own, so the first one to finish is not held up by
the slowest. Each verdict that holds up is sent to the browser at once as ``shown``, with a
``progress`` frame counting verdicts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from specgen_backend.protocol import Candidate

from ..kernel.exercise import unfinished
from ..kernel.messages import MAX_VALIDATE_CANDIDATES, Verdict
from ..protocol import Item, Progress, Shown
from ..ranking import SHOWN, judge, meaningful, normalise
from .ladder import called_head, ladder, parses_in_cell
from .repair import close_brackets, no_space_after_opener, opened_and_left_open, scan_brackets, trim_tail

__all__ = ["Validation", "Entry", "adds_code", "chains_an_assignment"]

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One distinct candidate text and what became of it."""

    text: str  # the candidate's text; once validated, the rung shown (if one was)
    indices: list[int]  # the candidates (by backend index) with this text
    logprob: float
    adapter: str
    runs: list[str] = dataclasses.field(default_factory=list)  # texts sent to the kernel: the whole, then rungs
    known: str = ""  # why the whole candidate is not run: the SyntaxError Python gives it without a fork
    verdict: Optional[Verdict] = None  # None until known (or never run)
    reason: str = ""  # not shown: why ("raised NameError: ..."); shown: ""
    shown: bool = False
    done: bool = False


def adds_code(prefix: str, candidate: str) -> str:
    """"" when ``candidate`` adds code after ``prefix``; else why not ("was empty", "was only a
    comment"). A candidate that only continues a comment the prefix ends in adds no code."""
    if not candidate.strip():
        return "was empty"
    source = prefix + candidate
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    boundary = len(prefix)
    comment = False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            end = starts[min(tok.end[0] - 1, len(starts) - 1)] + tok.end[1]
            if end <= boundary:
                continue
            if tok.type == tokenize.COMMENT:
                comment = True
            elif tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                continue
            elif tok.type == tokenize.ERRORTOKEN and not tok.string.strip():
                continue
            else:
                return ""
    except (tokenize.TokenError, SyntaxError):
        pass  # read as far as it goes: code at the cursor is often unfinished
    return "was only a comment" if comment else "was empty"


def chains_an_assignment(prefix: str, candidate: str) -> str:
    """Why ``candidate`` is not worth running ("made the line a chained assignment"), or "".

    After ``due = inv.`` a weak model writes ``vat_rate = [0, 2, 2, 2]``: ``due = inv.vat_rate =
    [0, 2, 2, 2]`` parses and runs, and overwrites the attribute the user was reading. A statement
    whose text before the cursor already assigns (an ``=`` outside brackets and lambdas) gets no
    second ``=`` from a completion: a chained assignment is almost never what a cursor after an
    ``=`` asks for, and it is exactly what this junk looks like.
    """
    source = prefix + candidate
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    boundary = len(prefix)
    depth, assigned, in_lambda = 0, False, False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            start = starts[min(tok.start[0] - 1, len(starts) - 1)] + tok.start[1]
            if tok.type == tokenize.NEWLINE or (tok.type == tokenize.OP and tok.string == ";" and depth == 0):
                if start >= boundary:
                    return ""  # the statement at the cursor ended without a second assignment
                depth, assigned, in_lambda = 0, False, False
            elif tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth = max(0, depth - 1)
            elif tok.type == tokenize.NAME and tok.string == "lambda" and depth == 0:
                in_lambda = True
            elif tok.type == tokenize.OP and tok.string == "=" and depth == 0 and not in_lambda:
                if start >= boundary and assigned:
                    return "made the line a chained assignment"
                assigned = assigned or start < boundary
    except (tokenize.TokenError, SyntaxError):
        pass  # read as far as it goes: code at the cursor is often unfinished
    return ""


def _has_comment(text: str) -> bool:
    """Whether ``text`` holds a comment (read as far as the tokenizer goes)."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                return True
    except (tokenize.TokenError, SyntaxError):
        pass
    return False


def _holds_code(suffix: str) -> bool:
    """Whether the text after the cursor has a line of code (not only blanks and comments)."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in suffix.splitlines())


class Validation:
    """The candidates of one request, validated as they come. Use ``submit`` then ``finish``."""

    def __init__(
        self,
        *,
        request_id: int,
        prefix: str,
        suffix: str,
        run: Optional[Callable[[list[str]], Any]],
        not_run_reason: str,
        send: Callable[[Any], None],
    ):
        """``run(texts)``: awaitable verdicts of ``texts`` in a fork of the kernel, in order; None:
        nothing is run and every candidate is shown "not_validated" with ``not_run_reason``."""
        self._id = request_id
        self._prefix = prefix
        self._suffix = suffix
        self._run = run
        self._why_not = not_run_reason
        self._send = send
        self.entries: dict[str, Entry] = {}  # normalised text → entry, in order of arrival
        self.rejected: list[str] = []  # one reason per candidate not shown (before validation)
        self._seen: set[int] = set()
        self._queue: list[Entry] = []
        self._tasks: list[asyncio.Task] = []
        self._done = 0
        self.first_shown: Optional[float] = None  # time.perf_counter() of the first ``shown``
        self._shown_texts: dict[str, Entry] = {}  # normalised shown text → its entry

    def submit(self, index: int, candidate: Candidate) -> None:
        """Candidate ``index`` is complete (from ``on_candidate``, or from the final result: a
        second submit of the same index is ignored)."""
        if index in self._seen:
            return
        self._seen.add(index)
        log.debug("request %s, candidate %d as generated (%s): %r", self._id, index, candidate.finish_reason,
                  candidate.text)
        text = close_brackets(self._prefix, no_space_after_opener(self._prefix, trim_tail(candidate.text, self._suffix)),
                              self._suffix, ended_by_model=candidate.finish_reason == "stop")
        if text != candidate.text:
            candidate = dataclasses.replace(candidate, text=text)
        why = adds_code(self._prefix, candidate.text) or chains_an_assignment(self._prefix, candidate.text)
        if why:
            self.rejected.append(why)
            return
        key = normalise(candidate.text)
        entry = self.entries.get(key)
        if entry is not None:
            entry.indices.append(index)
            if not entry.done:
                # One code, two copies: the score is the likelier copy's; the text is the one without
                # a comment nobody checked (``'qzunits']  # 0x, 0.0.0. [`` next to ``'qzunits']``),
                # else the likelier copy's.
                mine, theirs = _has_comment(candidate.text), _has_comment(entry.text)
                if mine < theirs or (mine == theirs and candidate.logprob > entry.logprob):
                    # The runs already sent hold the other copy: its verdict is this copy's too
                    # (the same tokens), so only the label changes.
                    entry.runs = [candidate.text if run == entry.text else run for run in entry.runs]
                    entry.text, entry.adapter = candidate.text, candidate.adapter or ""
                entry.logprob = max(entry.logprob, candidate.logprob)
            return
        entry = self.entries[key] = Entry(text=candidate.text, indices=[index], logprob=candidate.logprob,
                                          adapter=candidate.adapter or "")
        if self._run is None:
            self._settle(entry, Verdict(index=index, status="not_validated", message=self._why_not))
            return
        entry.runs = [entry.text]
        left_open = opened_and_left_open(self._prefix, entry.text)
        if candidate.finish_reason == "stop" and not left_open and parses_in_cell(self._prefix, entry.text, self._suffix):
            pass  # the model ended a statement that parses: it runs or fails as written
        else:
            steps = ladder(self._prefix, entry.text, self._suffix)
            if steps.whole_error:
                entry.known = steps.whole_error
            elif steps.rungs and left_open:
                entry.known = "a bracket it opens is never closed"
            entry.runs = ([] if entry.known else [entry.text]) + [r.text for r in reversed(steps.rungs)]
        called = called_head(self._prefix, entry.text, self._suffix)  # ``inv.`` + ``gross_total`` → ``gross_total()``
        if called is not None and called not in entry.runs:
            entry.runs.append(called)
        if not self._queue:
            asyncio.get_running_loop().call_soon(self._flush)
        self._queue.append(entry)

    async def finish(self) -> list[Entry]:
        """Wait for every verdict; the entries in order of arrival."""
        self._flush()
        try:
            while self._tasks:
                tasks, self._tasks = self._tasks, []
                await asyncio.gather(*tasks)
        finally:
            self.cancel()
        return list(self.entries.values())

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    @property
    def total(self) -> int:
        return len(self.entries)

    # -- internals -------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        self._progress()
        # A request forks at most MAX_VALIDATE_CANDIDATES children and leaves the rest unrun
        # ("not_validated", which would be shown): a big batch goes as several requests.
        chunk: list[Entry] = []
        for entry in batch:
            if chunk and sum(len(e.runs) for e in chunk) + len(entry.runs) > MAX_VALIDATE_CANDIDATES:
                self._tasks.append(asyncio.ensure_future(self._validate(chunk)))
                chunk = []
            chunk.append(entry)
        self._tasks.append(asyncio.ensure_future(self._validate(chunk)))

    async def _validate(self, batch: list[Entry]) -> None:
        texts = [text for entry in batch for text in entry.runs]
        try:
            verdicts = await self._run(texts)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed validation costs the proof, not the request
            log.warning("validating %d candidates failed", len(batch), exc_info=True)
            verdicts = [Verdict(index=i, status="not_validated", message=f"not validated: {exc}") for i in range(len(texts))]
        at = 0
        for entry in batch:
            mine, at = verdicts[at: at + len(entry.runs)], at + len(entry.runs)
            self._choose(entry, [self._checked(text, v) for text, v in zip(entry.runs, mine)])

    def _checked(self, text: str, verdict: Verdict) -> Verdict:
        why = self._left_open(text, verdict) if verdict.status in ("incomplete", "defined") else ""
        if why:
            return dataclasses.replace(verdict, status="raised", error_type="SyntaxError", message=why)
        return verdict

    def _left_open(self, text: str, verdict: Verdict) -> str:
        """Why the cell with ``text``, unfinished, is not the user's open block; "" when it is.

        The kernel closes an unfinished cell at its end and runs that. "incomplete" says so;
        "defined" (a function body) may be unfinished too. Two kinds are the candidate's fault,
        not the user's open block:
        - a bracket the candidate itself opened and never closed: the model stopped (or was cut)
          mid-expression;
        - any bracket left open at the candidate's end with code after the cursor. Closed at the
          cell's end, that bracket takes in the lines below: ``return sum(`` + ``G, 3,`` above
          ``total = cart_total(cart)`` ran as ``sum(G, 3, total=cart_total(cart))``. The call
          that would have exercised the body became an argument, so the body looked "defined".
        """
        cell = self._prefix + text + self._suffix
        if verdict.status != "incomplete" and not unfinished(cell):
            return ""
        if opened_and_left_open(self._prefix, text):
            return "a bracket it opens is never closed"
        scanned = scan_brackets(self._prefix + text)
        if scanned is not None and scanned[0] and _holds_code(self._suffix):
            return "a bracket it leaves open takes in the code after the cursor"
        return ""

    def _choose(self, entry: Entry, verdicts: list[Verdict]) -> None:
        """Settle ``entry`` on the best of its runs that holds up (the best verdict, then the
        longest: it keeps the most of what the model wrote); on the whole candidate's verdict
        (or known error) when none does."""
        held = [(text, v) for text, v in zip(entry.runs, verdicts) if judge(v).shown]
        if held:
            text, verdict = min(held, key=lambda tv: (SHOWN[judge(tv[1]).verdict or "not_validated"],
                                                      0 if meaningful(tv[1]) else 1, -len(tv[0])))
            duplicate = self._shown_texts.get(normalise(text))
            if duplicate is not None and duplicate is not entry:  # two candidates cut back to one text
                duplicate.indices += entry.indices
                del self.entries[next(k for k, e in self.entries.items() if e is entry)]  # one fewer to wait for
                self._progress()
                return
            entry.text = text
        elif entry.known:
            verdict = Verdict(index=entry.indices[0], status="raised", error_type="SyntaxError", message=entry.known)
        elif verdicts:
            verdict = verdicts[0]
        else:  # the kernel answered fewer verdicts than it was sent texts
            verdict = Verdict(index=entry.indices[0], status="not_validated", message="not validated: no verdict came")
        self._settle(entry, verdict)

    def _settle(self, entry: Entry, verdict: Verdict) -> None:
        entry.verdict = verdict
        entry.done = True
        judged = judge(verdict)
        log.debug("request %s, candidates %s: %r (tried %d) -> %s %s", self._id, entry.indices, entry.text,
                  len(entry.runs), verdict.status, judged.detail)
        self._done += 1
        if judged.shown:
            self._shown_texts[normalise(entry.text)] = entry
            entry.shown = True
            if self.first_shown is None:
                self.first_shown = time.perf_counter()
            self._send(Shown(reply_to=self._id, item=Item(text=entry.text, verdict=judged.verdict or "not_validated",
                                                          detail=judged.detail, score=entry.logprob,
                                                          adapter=entry.adapter)))
        else:
            entry.reason = judged.detail
        if self._run is not None:
            self._progress()

    def _progress(self) -> None:
        self._send(Progress(reply_to=self._id, stage="validating", done=self._done, total=self.total))
