"""Decoding held to the live state: each row's next token is masked to what can still be right.

Two masks, applied per row to that row's logits in the same batch (rows of other users, adapters
and requests carry their own masks, or none):

* the **head** mask (``HeadGuide``): while the identifier at the cursor is being generated, only
  tokens that keep it on the way to one of the names the live kernel has (``Constraint.names``);
  after the head, decoding is free;
* the **syntax** mask (``syntax_mask``): in code (not in strings or comments), no token that makes
  text Python's tokenizer cannot accept: a closing bracket that matches nothing open (in the cell
  text and what was generated), a number literal with a second dot (``0.0.0``), two commas in a
  row (or a comma right after an opening bracket), or a run of more than ``MAX_OPERATOR_RUN``
  operator characters with no space (``,,,``, ``====``; Python's longest operators are three
  characters: ``**=``, ``...``, ``>>=``); and in a statement that already assigns, no second
  ``=`` and no comma outside brackets (a chained assignment that overwrites what the line
  reads, a tuple of the value and junk).

Both come from a ``TokenTable``: the text each token id adds to a completion, with indices over
it, built once per model (``Engine.token_table``) in vectorised form so that a step costs a few
tensor operations per row even on a 150k-token vocabulary.

Semantics of the head mask, in plain Python (``token_allowed`` is this, and the tests hold the
vectorised masks to it token by token)::

    IDENT = set("ABC...Zabc...z0123456789_")
    rests = [(h[len(c.typed):], h[-1] in IDENT) for h in c.names if h.startswith(c.typed)]

    def complete(body):  # a head is done: decoding is free from here on
        return any(body == r and not e or body.startswith(r) and len(body) > len(r)
                   and (not e or body[len(r)] not in IDENT) for r, e in rests)

    def allowed(generated, text):  # may token ``text`` follow the row's text ``generated``?
        body = generated
        if not c.required and not c.typed:  # only an identifier the model starts is held,
            held = IDENT - set(digits) | {q for q in "'\"" if any(r[:1] == q for r, _ in rests)}
            if not generated.lstrip(" "):   # or a string when some head is one
                text = text.lstrip(" ")
                if not text or text[0] not in held:
                    return True  # spaces, or not an identifier: the row is free
            body = generated.lstrip(" ")
            if body and body[0] not in held:
                return True
        if complete(body):
            return True
        new = body + text
        return any(r.startswith(new) or new.startswith(r) and (not e or new[len(r)] not in IDENT)
                   for r, e in rests)

    eos allowed  <=>  not pending, or some r == body  (a head just completed)

Tokens that decode to part of a UTF-8 character, and special tokens other than the end ones, are
never allowed while a head is pending. When no token is allowed (heads the tokenizer cannot
spell, a ``typed`` that matches no head) the row is released to free decoding rather than forced
into garbage, and counted (``TokenTable.stats``).
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import string
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from .prompt import OPERATOR_CHARS, CodeScanner
from .protocol import Constraint

__all__ = [
    "IDENT_CHARS",
    "MAX_OPERATOR_RUN",
    "TokenTable",
    "HeadGuide",
    "RowGuide",
    "Rule",
    "token_texts",
    "token_allowed",
    "eos_allowed",
    "syntax_mask",
    "open_statement",
]

log = logging.getLogger(__name__)

IDENT_CHARS = frozenset(string.ascii_letters + string.digits + "_")
_IDENT_START = frozenset(string.ascii_letters + "_")
_QUOTES = ("'", '"')
_IDENT_LEAD = re.compile(r" *[A-Za-z_]")  # spaces, then the start of an identifier
MAX_OPERATOR_RUN = 3  # Python's longest operators: ``**=``, ``//=``, ``>>=``, ``<<=``, ``...``
_MAX_CLOSERS = 8  # closing brackets one token may bring, at most, that the masks tell apart
_STATES = ("code", "'", '"')  # scanner states with syntax rules (``other``: none)


# ----------------------------------------------------------------------------------------------
# The reference semantics (plain Python; the masks below are their vectorised form)


def _rests(constraint: Constraint) -> list[tuple[str, bool]]:
    """(what is left of each head after ``typed``, whether the head ends in an identifier char)."""
    typed = constraint.typed
    out = []
    for head in dict.fromkeys(constraint.names):
        if not isinstance(head, str):
            raise TypeError(f"constraint names must be strings, not {type(head).__name__}")
        if head and head.startswith(typed):
            out.append((head[len(typed) :], head[-1] in IDENT_CHARS))
    return out


def _complete(body: str, rests: Sequence[tuple[str, bool]]) -> bool:
    for rest, ends_ident in rests:
        if body == rest and not ends_ident:
            return True
        if len(body) > len(rest) and body.startswith(rest) and (not ends_ident or body[len(rest)] not in IDENT_CHARS):
            return True
    return False


def _optional(constraint: Constraint) -> bool:
    return not constraint.required and not constraint.typed


def _holds(lead: str, rests: Sequence[tuple[str, bool]]) -> bool:
    """Whether an optional constraint holds a completion that begins with ``lead``: an identifier,
    or a string when some head is a string (a frame's labels as ``df.groupby(``'s argument: any
    expression may come, but a string there is one of the labels)."""
    return lead in _IDENT_START or (lead in _QUOTES and any(rest.startswith(lead) for rest, _ in rests))


def token_allowed(constraint: Constraint, generated: str, text: str) -> bool:
    """Whether a token of text ``text`` may follow ``generated`` (the row's text so far)."""
    rests = _rests(constraint)
    body = generated
    if _optional(constraint):
        body = generated.lstrip(" ")
        if not body:
            text = text.lstrip(" ")
            if not text or not _holds(text[0], rests):
                return True
        elif not _holds(body[0], rests):
            return True
    if _complete(body, rests):
        return True
    new = body + text
    return any(
        rest.startswith(new) or (len(new) > len(rest) and new.startswith(rest) and (not e or new[len(rest)] not in IDENT_CHARS))
        for rest, e in rests
    )


def eos_allowed(constraint: Constraint, generated: str) -> bool:
    """Whether the row may end after ``generated``."""
    rests = _rests(constraint)
    body = generated
    if _optional(constraint):
        body = generated.lstrip(" ")
        if not body or not _holds(body[0], rests):
            return True
    return _complete(body, rests) or any(body == rest for rest, _ in rests)


# ----------------------------------------------------------------------------------------------
# Token texts


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as the printable character its tokens spell it with."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _decoder_kind(tokenizer) -> str:
    """``bytelevel`` (GPT-2, Qwen, StarCoder), ``sentencepiece`` (Llama, Mistral: ``▁`` for a
    space, ``<0xNN>`` byte pieces) or ``other``, judged from the fast tokenizer's decoder."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return "other"
    try:
        spec = json.dumps(json.loads(decoder.__getstate__()))
    except Exception:  # an exotic decoder: decode token by token
        return "other"
    if '"ByteLevel"' in spec:
        return "bytelevel"
    if "\u2581" in spec or "\\u2581" in spec or '"Metaspace"' in spec:
        return "sentencepiece"
    return "other"


def decode_row(tokenizer, texts: Optional[Sequence[Optional[str]]], ids: Sequence[int]) -> str:
    """The text of a row's generated ``ids`` (``texts``: ``token_texts`` of the tokenizer, or None).

    SentencePiece decoders drop the space of a sequence's first piece (``▁x`` alone decodes as
    ``x``), but a completion's first token continues the text before the cursor: its space is
    part of the suggestion (``x =`` + `` 5``). Byte-level decoders keep it already.
    """
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    if ids and not text.startswith(" ") and texts is not None:
        lead = texts[ids[0]] if ids[0] < len(texts) else None
        bare = lead.lstrip(" ") if lead else ""
        if lead and bare != lead and text.startswith(bare):
            text = lead[: len(lead) - len(bare)] + text
    return text


def token_texts(tokenizer) -> list[Optional[str]]:
    """The text each token id adds to a completion; None for special and added tokens and for
    tokens that are only part of a UTF-8 character (their text depends on the next token)."""
    size = len(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special.update(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    kind = _decoder_kind(tokenizer)
    texts: list[Optional[str]] = [None] * size
    if kind == "bytelevel":
        # str.translate maps the alphabet back to bytes (as latin-1 chars) at C speed.
        table = str.maketrans({u: chr(b) for b, u in _bytes_to_unicode().items()})
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                continue
            try:
                texts[i] = piece.translate(table).encode("latin-1").decode("utf-8")
            except UnicodeEncodeError:  # a piece outside the alphabet: ask the tokenizer
                texts[i] = _decode_one(tokenizer, i)
            except UnicodeDecodeError:
                texts[i] = None  # part of a character
    elif kind == "sentencepiece":
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                continue
            byte = _BYTE_PIECE.fullmatch(piece)
            if byte:
                value = int(byte.group(1), 16)
                texts[i] = chr(value) if value < 0x80 else None
            else:
                texts[i] = piece.replace("\u2581", " ")
    else:
        for i in range(size):
            if i not in special:
                texts[i] = _decode_one(tokenizer, i)
    _check_texts(tokenizer, texts, kind)
    return texts


def _decode_one(tokenizer, i: int) -> Optional[str]:
    text = tokenizer.decode([i], skip_special_tokens=True)
    return None if not text or text.endswith("\ufffd") else text


def _check_texts(tokenizer, texts: list[Optional[str]], kind: str) -> None:
    """Compare a sample with the tokenizer's own decoding; log (not fail) on disagreement."""
    step = max(1, len(texts) // 256)
    wrong = 0
    for i in range(0, len(texts), step):
        if texts[i] is None:
            continue
        decoded = tokenizer.decode([i], skip_special_tokens=True)
        # SentencePiece decoders drop the leading space of a sequence's first piece.
        if decoded != texts[i] and not (kind == "sentencepiece" and decoded == texts[i].lstrip(" ")):
            wrong += 1
    if wrong:
        log.warning("%d sampled token texts differ from the tokenizer's decoding (decoder kind %s)", wrong, kind)


# ----------------------------------------------------------------------------------------------
# The table: indices over the texts, built once per model


_IDENT_RUN = re.compile(r"[A-Za-z0-9_]*")


def _ident_run(text: str) -> int:
    """How many identifier characters ``text`` starts with."""
    return _IDENT_RUN.match(text).end()


class _Index:
    """Token texts sorted, to find by bisection the tokens that start with a string (a range) and
    those whose whole text is a given string (the prefixes of a head)."""

    def __init__(self, pairs: Iterable[tuple[str, int]]):
        import torch

        texts, ids = [], []
        for text, i in pairs:
            texts.append(text)
            ids.append(i)
        order = sorted(range(len(texts)), key=texts.__getitem__)
        self.texts = [texts[j] for j in order]
        self.ids = torch.tensor([ids[j] for j in order], dtype=torch.long)  # (N,)
        self.ident_run = torch.tensor([_ident_run(t) for t in self.texts], dtype=torch.int32)  # (N,)

    def _exact(self, text: str) -> tuple[int, int]:
        lo = bisect.bisect_left(self.texts, text)
        if lo == len(self.texts) or self.texts[lo] != text:
            return lo, lo
        return lo, bisect.bisect_right(self.texts, text, lo)

    def matches(self, rest: str, ends_ident: bool) -> list:
        """Ids of the tokens consistent with ``rest``: their text is a prefix of it, or it is a
        prefix of their text and the boundary rule holds for the character after it."""
        out = []
        for k in range(1, len(rest) + 1):
            lo, hi = self._exact(rest[:k])
            if lo < hi:
                out.append(self.ids[lo:hi])
        lo, hi = self._exact(rest)
        lo = hi  # the exact matches (first of the range of texts starting with ``rest``) are in
        hi = bisect.bisect_left(self.texts, rest + "\U0010ffff", lo)
        if lo < hi:
            ids = self.ids[lo:hi]
            if ends_ident:
                if all(ch in IDENT_CHARS for ch in rest):
                    ids = ids[self.ident_run[lo:hi] == len(rest)]
                else:
                    keep = [j - lo for j in range(lo, hi) if self.texts[j][len(rest)] not in IDENT_CHARS]
                    ids = ids[keep]
            out.append(ids)
        return out


@dataclass
class _Syntax:
    """Per-token facts for the syntax mask, from one start state (code, or inside a ' or " string)."""

    sig: object  # (V,) int: which closing-bracket signature the token has (0: none)
    inner_bad: object  # (V,) bool: unparseable whatever comes before it
    lead_ops: object  # (V,) int: operator characters the token starts with (code only)


class TokenTable:
    """The text of every token id and the indices the masks need; one per model (vocabulary)."""

    def __init__(self, texts: Sequence[Optional[str]], size: int, end_ids: Iterable[int] = ()):
        import torch

        self.size = size  # the logits' width (the model may have more rows than the tokenizer)
        self.texts: list[Optional[str]] = list(texts[:size]) + [None] * max(0, size - len(texts))
        self.end_ids = torch.tensor(sorted(i for i in end_ids if 0 <= i < size), dtype=torch.long)
        self.full = _Index((t, i) for i, t in enumerate(self.texts) if t)
        # Optional constraints skip the spaces before an identifier: " name" is held like "name".
        self.spaced = _Index((t.lstrip(" "), i) for i, t in enumerate(self.texts) if t and t[0] == " " and t.lstrip(" "))
        # Tokens that, at the start of an optional constraint, begin no identifier (or only spaces).
        free = [t is not None and _IDENT_LEAD.match(t) is None for t in self.texts]
        free = torch.tensor(free, dtype=torch.bool)
        # Tokens that begin an identifier (after spaces), and special/partial ones: what an optional
        # constraint refuses at its start unless they begin a head.
        ident_led = torch.nonzero(~free).squeeze(1)  # (K,)
        self.ident_led = ident_led[~torch.isin(ident_led, self.end_ids)]
        # Tokens that begin a string (after spaces), per quote: held too when a head is a string.
        self.quote_led = {q: torch.tensor([i for i, t in enumerate(self.texts) if t and t.lstrip(" ")[:1] == q],
                                          dtype=torch.long) for q in _QUOTES}
        self.optional_free = free  # (V,)
        # Tokens that begin a comment on the line they are on: refused at the start of a row whose
        # statement is open at the cursor (``RowGuide.open_statement``).
        self.comment_led = torch.tensor([i for i, t in enumerate(self.texts) if t and t.lstrip(" \t")[:1] == "#"],
                                        dtype=torch.long)
        self.stats = {"constrained": 0, "released": 0}  # rows held by a constraint; rows let go
        self._build_syntax()
        self._syntax_cache: dict[tuple, object] = {}

    @classmethod
    def from_tokenizer(cls, tokenizer, size: int, end_ids: Iterable[int] = ()) -> "TokenTable":
        return cls(token_texts(tokenizer), size, end_ids)

    # -- syntax facts ---------------------------------------------------------------------

    def _build_syntax(self) -> None:
        import torch

        signatures: dict[tuple[str, ...], int] = {(): 0}
        self.syntax: dict[str, _Syntax] = {}
        number = [re.compile(p) for p in (r"\d*\.[\d.]", r"[\d.]", r"\d*\.\d*\.[\d.]")]
        inner_number = re.compile(r"(?<![\w.])(?:\d+\.\d*|\.\d+)\.[\d.]")
        # Only tokens with a character the rules look at can be banned: the facts are kept for
        # those alone (a quarter of a code vocabulary), so a step's work is in proportion to them.
        relevant = [i for i, t in enumerate(self.texts) if t and (not _SPECIAL_CHARS.isdisjoint(t) or t[0].isdigit())]
        count = len(relevant)
        self.relevant = torch.tensor(relevant, dtype=torch.long)  # (R,) token ids
        bans = [[False] * count for _ in number]
        lead_comma = [False] * count
        eq_inner, eq_lead = [False] * count, [False] * count  # see _assignment_at
        top_comma = [False] * count  # a comma outside any bracket the token opens (before a quote or #)
        for state in _STATES:
            sig, bad, lead = [0] * count, [False] * count, [0] * count
            # Inside a string only a token that can end it (its quote, a backslash, a newline) has
            # any code in it; the rest is string text whatever it holds.
            enders = None if state == "code" else (state, "\\", "\n")
            for j, i in enumerate(relevant):
                text = self.texts[i]
                if enders is not None and not any(e in text for e in enders):
                    continue
                closers, inner_bad, lead_ops = _token_syntax(text, state)
                if closers:
                    sig[j] = signatures.setdefault(closers[:_MAX_CLOSERS], len(signatures))
                if state == "code" and "'" not in text and '"' not in text and "#" not in text and inner_number.search(text):
                    inner_bad = True
                bad[j], lead[j] = inner_bad, lead_ops
                if state == "code":
                    lead_comma[j] = text.lstrip(" \t").startswith(",")
                    at = _assignment_at(text)
                    eq_lead[j], eq_inner[j] = at == 0, at > 0
                    top_comma[j] = _top_level_comma(text)
                    for ban, pattern in zip(bans, number):
                        ban[j] = pattern.match(text) is not None
            self.syntax[state] = _Syntax(
                sig=torch.tensor(sig, dtype=torch.long), inner_bad=torch.tensor(bad, dtype=torch.bool), lead_ops=torch.tensor(lead, dtype=torch.int32)
            )  # each (R,)
        self.number_bans = [torch.tensor(ban, dtype=torch.bool) for ban in bans]  # (R,) each; see _number_state
        self.lead_comma = torch.tensor(lead_comma, dtype=torch.bool)  # (R,)
        self.eq_inner = torch.tensor(eq_inner, dtype=torch.bool)  # (R,): assigns wherever it comes
        self.eq_lead = torch.tensor(eq_lead, dtype=torch.bool)  # (R,): assigns unless after an operator
        self.top_comma = torch.tensor(top_comma, dtype=torch.bool)  # (R,)
        self.signatures = sorted(signatures, key=signatures.get)  # index -> closers

    def syntax_banned(self, scanner: CodeScanner):
        """The token ids (K,) the syntax rules refuse after the scanner's text; None: no rule here."""
        import torch

        state = scanner.state
        if state == "other":
            return None
        code = state == "code"
        key = (
            state,
            min(scanner.run, MAX_OPERATOR_RUN + 1) if code else 0,
            code and bool(scanner.last) and scanner.last in ",([{",
            _number_state(scanner.tail) if code else 0,
            code and not scanner.stack and scanner.assigns,
            code and scanner.unpacks,
            tuple(scanner.stack[-_MAX_CLOSERS:]),
        )
        banned_ids = self._syntax_cache.get(key)
        if banned_ids is not None:
            return banned_ids
        facts = self.syntax[state]
        stack = key[-1]
        ok = torch.tensor([_closes(sig, stack) for sig in self.signatures], dtype=torch.bool)  # (S,)
        banned = facts.inner_bad | ~ok[facts.sig]  # (R,)
        if code:
            banned |= (facts.lead_ops > 0) & (facts.lead_ops + key[1] > MAX_OPERATOR_RUN)
            if key[2]:
                banned |= self.lead_comma
            if key[3]:
                banned |= self.number_bans[key[3] - 1]
            if key[4]:
                # The statement assigns already: no second ``=`` outside brackets (``due =
                # inv.vat_rate = [0, 2]`` overwrites what the user was reading). A token that begins
                # with ``=`` right after an operator character makes ``==``, ``<=``: not banned.
                banned |= self.eq_inner
                if key[1] == 0:
                    banned |= self.eq_lead
                # Nor a comma outside brackets: it makes the value a tuple, and after ``x =
                # df.name.str.`` that is ``fullmatch, 'B', 'B'``, which runs and means nothing.
                # Unless the targets are a tuple too (``a, b = b, a``).
                if not key[5]:
                    banned |= self.top_comma
        banned_ids = self.relevant[banned]
        if len(self._syntax_cache) > 4096:
            self._syntax_cache.clear()
        self._syntax_cache[key] = banned_ids
        return banned_ids

    def syntax_mask(self, scanner: CodeScanner):
        """(V,) bool: the tokens the syntax rules allow after the scanner's text; None: all."""
        import torch

        banned = self.syntax_banned(scanner)
        if banned is None:
            return None
        mask = torch.ones(self.size, dtype=torch.bool)
        mask[banned] = False
        return mask


_SPECIAL_CHARS = frozenset("()[]{}'\"#.") | OPERATOR_CHARS


def _assignment_at(text: str) -> int:
    """Where token ``text`` (read in code) has an assignment ``=`` outside any bracket it opens:
    not part of ``==``, ``<=``, ``:=``, ``+=``..., before any quote or ``#``; -1 when it has none.
    A ``=`` at 0 may still join an operator the text before the token ends in."""
    depth = 0
    for j, ch in enumerate(text):
        if ch in "'\"#":
            return -1
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "=" and depth <= 0:
            if text[j + 1: j + 2] == "=":
                return -1  # ``==`` (what follows it is another matter: rare in one token)
            if j == 0 or text[j - 1] not in "=<>!:+-*/%@&|^":
                return j
            return -1
    return -1


def _top_level_comma(text: str) -> bool:
    """Whether token ``text`` (read in code) has a comma outside any bracket it opens, before any
    quote or ``#``."""
    depth = 0
    for ch in text:
        if ch in "'\"#":
            return False
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth <= 0:
            return True
    return False


def _closes(sig: tuple[str, ...], stack: tuple[str, ...]) -> bool:
    """Whether closing brackets ``sig`` (in order) each match the innermost open one left."""
    if len(sig) > len(stack):
        return False
    pairs = {")": "(", "]": "[", "}": "{"}
    return all(pairs[c] == stack[-1 - j] for j, c in enumerate(sig))


def _token_syntax(text: str, state: str) -> tuple[tuple[str, ...], bool, int]:
    """(closing brackets it brings beyond what it opens, whether it is unparseable whatever comes
    before it, operator characters it starts with) for ``text`` read from ``state``."""
    scanner = CodeScanner()
    if state != "code":
        scanner.quote = state
    closers: list[str] = []
    bad = False
    pairs = {")": "(", "]": "[", "}": "{"}
    lead = 0
    leading = state == "code"  # the run it starts with joins the run the text before it ends with
    for ch in text:
        if scanner.state == "code":
            if ch in pairs:
                if not scanner.stack:
                    closers.append(ch)
                elif scanner.stack[-1] != pairs[ch]:
                    bad = True  # ``(]``: Python's tokenizer refuses a mismatched closer
            # ``,,`` or ``(,`` inside the token (its first comma is judged against the text before).
            if ch == "," and scanner.last and scanner.last in ",([{":
                bad = True
        scanner.feed(ch)
        if leading and ch in OPERATOR_CHARS:
            lead += 1
        else:
            leading = False
            if scanner.state == "code" and scanner.run > MAX_OPERATOR_RUN:
                bad = True
    return tuple(closers), bad, lead


_NUMBER_TAIL = re.compile(r"(?<![\w.])(?:(\d+)(\.\d*)?|(\.\d+))(\.)?$")


def _number_state(tail: str) -> int:
    """How the code text ends, for the number rule: 0 not in a number, 1 a float (``0.5``, ``3.``),
    2 a float and a dot (``0.5.``), 3 an integer (``42``)."""
    m = _NUMBER_TAIL.search(tail)
    if not m:
        return 0
    is_float = m.group(2) is not None or m.group(3) is not None
    if m.group(4):
        return 2 if is_float else 1
    return 1 if is_float else 3


def syntax_mask(table: TokenTable, scanner: CodeScanner):
    """The syntax mask after ``scanner``'s text (see the module docstring); None: no rule applies."""
    return table.syntax_mask(scanner)


# ----------------------------------------------------------------------------------------------
# Per-row state


class HeadGuide:
    """The heads of one request's constraint, shared by its rows, with rules cached by row state."""

    def __init__(self, constraint: Constraint, table: TokenTable):
        self.constraint = constraint
        self.table = table
        self.rests = _rests(constraint)
        self.optional = _optional(constraint)
        # The rests of the preferred heads (those that are heads at all).
        named = {rest for rest, _ in self.rests}
        typed = constraint.typed
        self.preferred = [h[len(typed):] for h in dict.fromkeys(constraint.preferred)
                          if isinstance(h, str) and h.startswith(typed) and h[len(typed):] in named]
        self.steered = None  # the row (engine._Row) steered to ``preferred``
        self._cache: dict[tuple[bool, str], Rule] = {}

    def rule(self, undecided: bool, body: str) -> "Rule":
        """The tokens a row at ``body`` may take: ``only`` these ids (a head pending; empty:
        none can continue it), or all but the ``ban`` ids (optional, no identifier begun)."""
        import torch

        key = (undecided, body)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        table = self.table
        live = list(dict.fromkeys((rest[len(body) :], e) for rest, e in self.rests if rest.startswith(body)))
        parts = []
        for rest, ends_ident in live:
            parts += table.full.matches(rest, ends_ident)
            if undecided:
                parts += table.spaced.matches(rest, ends_ident)
        ids = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        if undecided:
            # Whatever begins an identifier (or a string, when heads are strings), unless it
            # begins a head; the rest (and EOS) is free.
            held = torch.cat([table.ident_led, *(table.quote_led[q] for q in _QUOTES if _holds(q, self.rests))])
            rule = Rule("ban", held[~torch.isin(held, ids)])
        else:
            if any(rest == "" for rest, _ in live):  # a head just completed: the row may end
                ids = torch.cat([ids, table.end_ids])
            rule = Rule("only", ids)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[key] = rule
        return rule

    def mask(self, undecided: bool, body: str):
        """``rule`` as a (V,) bool mask of the allowed tokens."""
        return self.rule(undecided, body).mask(self.table.size)


@dataclass(frozen=True)
class Rule:
    """Which tokens a row may take: ``only`` the ids, or all but the ``ban`` ids."""

    kind: str  # "only" | "ban"
    ids: object  # (K,) long

    def mask(self, size: int):
        import torch

        mask = torch.zeros(size, dtype=torch.bool) if self.kind == "only" else torch.ones(size, dtype=torch.bool)
        mask[self.ids] = self.kind == "only"
        return mask

    def apply(self, row) -> None:
        """Set the refused tokens of ``row`` (V,) logits to -inf, in place."""
        import torch

        if self.kind == "ban":
            row.index_fill_(0, self.ids.to(row.device), float("-inf"))
        else:
            ids = self.ids.to(row.device)
            kept = row[ids]
            row.fill_(float("-inf"))
            row[ids] = kept


# Characters of the active cell before the cursor read for brackets and strings (both engines).
MAX_SCANNED_PREFIX = 8192


def scanned_prefix(prefix: str) -> str:
    """What of the text before the cursor the decoding rules read: all of it, or of a huge cell
    its last ``MAX_SCANNED_PREFIX`` characters from a line start. It is read in Python a
    character at a time in the model's thread; a bracket opened before that is not seen (and
    closing it is then refused by the syntax mask: a small loss against pausing every user's
    decoding)."""
    if len(prefix) <= MAX_SCANNED_PREFIX:
        return prefix
    tail = prefix[-MAX_SCANNED_PREFIX:]
    return tail[tail.find("\n") + 1 :]


def open_statement(scanner: CodeScanner, prefix: str) -> bool:
    """Whether the cursor, after ``prefix`` (read by ``scanner``), is inside an expression: a
    bracket is open, or the line so far ends with an operator waiting for its operand (``=``,
    ``+``, ``.``, ``,``; not ``:``, which ends a block header, nor ``;``)."""
    if scanner.state != "code":
        return False
    if scanner.stack:
        return True
    line = prefix[prefix.rfind("\n") + 1 :]
    return bool(line.strip()) and scanner.last in OPERATOR_CHARS and scanner.last not in ":;"


class RowGuide:
    """One row's decoding state beyond its text: the scanner, and its constraint's progress."""

    def __init__(self, scanner: CodeScanner, *, statement: bool, heads: Optional[HeadGuide],
                 open_statement: bool = False):
        self._start = scanner
        self.scanner = scanner.copy()
        self.statement = statement  # mid-line: stop at the end of the statement
        # The cursor is inside an expression (``total = ``, ``sum(``, ``df.``): a row that begins
        # with a comment there adds no code and is never shown, so it may not begin with one.
        self.open_statement = open_statement
        self.heads = heads
        self.fed = ""  # the row text the scanner has read
        self.end = -1  # where the statement ended in the row text, once it did
        # Constraint progress: "undecided" (optional, no identifier yet), "pending", "free".
        self.mode = "free" if heads is None else ("undecided" if heads.optional else "pending")
        self.body = ""  # the head text generated so far
        self.released = False  # let go because no token could continue a head
        if heads is not None:
            heads.table.stats["constrained"] += 1
            if self.mode == "pending" and _complete("", heads.rests):
                self.mode = "free"

    def rule(self, table: TokenTable) -> Optional[Rule]:
        """What this row may take next (None: anything): its constraint's rule less what the
        syntax rules refuse (the constraint wins where the two leave nothing)."""
        import torch

        banned = table.syntax_banned(self.scanner)
        if self.open_statement and not self.fed.strip() and len(table.comment_led):
            banned = table.comment_led if banned is None else torch.cat([banned, table.comment_led])
        syntax = None if banned is None or not len(banned) else Rule("ban", banned)
        if self.mode == "free":
            return syntax
        head = self.heads.rule(self.mode == "undecided", self.body)
        if head.kind == "only" and not len(head.ids):
            self._release()
            return syntax
        if syntax is None:
            return head
        if head.kind == "ban":
            return Rule("ban", torch.cat([head.ids, banned]))
        kept = head.ids[~torch.isin(head.ids, banned)]
        return Rule("only", kept) if len(kept) else head

    def mask(self, table: TokenTable):
        """``rule`` as a (V,) bool mask, or None for no restriction."""
        rule = self.rule(table)
        return None if rule is None else rule.mask(table.size)

    def _release(self) -> None:
        log.debug("constraint released: no token continues %r toward %d heads", self.body, len(self.heads.rests))
        self.mode, self.released = "free", True
        self.heads.table.stats["released"] += 1

    def advance(self, text: Optional[str], end: bool) -> None:
        """Take the sampled token's text (None: special or part of a character) into account."""
        if self.mode == "free" or end:
            return
        if text is None:
            self._release()
            return
        if self.mode == "undecided":
            text = text.lstrip(" ")
            if not text:
                return
            if not _holds(text[0], self.heads.rests):
                self.mode = "free"
                return
            self.mode = "pending"
        body = self.body + text
        rests = self.heads.rests
        if _complete(body, rests):
            self.mode = "free"
        elif not any(rest.startswith(body) for rest, _ in rests):
            self._release()  # a token the mask did not allow (masks were lifted): stop holding
        self.body = body

    def statement_end(self, text: str) -> int:
        """Read the row's text; the index where its statement ends (mid-line only), else -1."""
        stable = text.rstrip("\ufffd")  # half a character: wait for the rest of it
        if not stable.startswith(self.fed):
            self.scanner, self.fed, self.end = self._start.copy(), "", -1  # re-decoded: read again
        new = stable[len(self.fed) :]
        if new:
            at = self.scanner.feed(new)
            if at >= 0 and self.end < 0:
                self.end = len(self.fed) + at
            self.fed = stable
        return self.end if self.statement else -1
