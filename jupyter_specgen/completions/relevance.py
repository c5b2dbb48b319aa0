"""Which candidate the notebook's own words point at. Pure.

Among candidates that all ran, the one a user wants is often named by what they wrote around the
cursor: ``mean_temp = weather[`` wants ``'temp_c'``, a markdown cell "Hits in March" above
``march = wide[`` wants ``'mar'``, "Spread of sensor 2" wants ``'sensor_2'``. A weak model picks
among the live names almost at random; this ranks its candidates by how many of the words of
their names and strings are words of the *intent*: the markdown cell just above the active cell,
the comments on the cursor's line and the one before, and the names being assigned on the
cursor's line. It only orders candidates that held up: it never makes one.

Words are the parts of identifiers and strings split at ``_``, case changes and digits, in
lower case; two words match when equal, when both are numbers of the same value ("7" and "007"),
or when both have three letters or more and one begins the other ("temp" and "temperature", "mar"
and "march", "sensor" and "sensors").
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Intent", "words_of", "intent_of", "relevance"]

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_ASSIGNED = re.compile(r"^\s*([A-Za-z_][\w.,\s\[\]'\"]*?)\s*(?:[-+*/%&|^@]|//|\*\*|>>|<<)?=(?!=)")
# Words that name nothing: they match too much to tell candidates apart.
_STOP = frozenset("""a an the of to in on at by for from with and or not is are be as it its this that
    each all any per into than then over under up down out new old get set make use do does show
    how what which who whose when where why value values data df x y i j k n""".split())


@dataclass(frozen=True)
class Intent:
    words: frozenset[str]  # what the user said they want
    used: frozenset[str]  # words the cursor's statement already uses: a candidate repeating them says nothing new


def words_of(text: str) -> set[str]:
    """The words of ``text``'s identifiers, strings and comments."""
    return {w.lower() for w in _WORD.findall(text)} - _STOP


def intent_of(prefix: str, markdown_above: str = "") -> Intent:
    """The intent around a cursor after ``prefix``: the words of the markdown cell just above,
    of the comments on the cursor's line and the line before it, of the names the line assigns."""
    lines = prefix.split("\n")
    line = lines[-1]
    words = words_of(markdown_above)
    for text in lines[-2:]:
        words |= words_of(_comment(text))
    assigned = _ASSIGNED.match(line)
    if assigned:
        words |= words_of(assigned.group(1))
        line = line[assigned.end():]
    return Intent(words=frozenset(words), used=frozenset(words_of(_code(line))))


def relevance(candidate: str, intent: Intent) -> int:
    """How many words of ``candidate``'s names and strings (not already used on its line) the
    intent names."""
    if not intent.words:
        return 0
    mine = words_of(_code(candidate)) - intent.used
    return sum(1 for w in mine if any(_match(w, i) for i in intent.words))


def _match(a: str, b: str) -> bool:
    if a == b:
        return True
    if a.isdigit() and b.isdigit():
        return int(a) == int(b)  # "item 7" names ``'SKU-007'``
    if len(a) < 3 or len(b) < 3 or a.isdigit() or b.isdigit():
        return False
    return a.startswith(b) or b.startswith(a)


def _comment(line: str) -> str:
    for text in _tokens(line, (tokenize.COMMENT,)):
        return text
    return ""


def _code(text: str) -> str:
    """The names and string contents of ``text`` (comments left out)."""
    return " ".join(_tokens(text, (tokenize.NAME, tokenize.STRING)))


def _tokens(text: str, types: Iterable[int]) -> list[str]:
    wanted = set(types)
    out: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in wanted:
                out.append(tok.string)
    except (tokenize.TokenError, SyntaxError):
        pass  # code at a cursor is often unfinished: what was read counts
    return out
