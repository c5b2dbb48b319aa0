"""The case set of ``bench_quality.py``: notebook completion cases written for this benchmark.

A *notebook* is a list of setup cells (code, or markdown made with ``md``) that build their data
on the spot: small frames, arrays, dicts, user functions and classes; nothing is read from disk
or the network. A *case* is one cursor in a new code cell at the end of that notebook: the text
before it (``prefix``) and after it (``suffix``), a ``reference`` completion written by hand, and
a ``check``: a Python expression evaluated after the cell ``prefix + completion + suffix`` ran in
the notebook's namespace, true when the completion did what was intended. The check sees the
namespace the cell left, plus

- ``_value``: the value of the cell's last expression (``None`` if it ends in a statement),
- ``_stdout``: what the cell printed,
- ``_completion``: the completion text itself,
- ``_same(a, b)``: equality for numbers (with a tolerance), arrays, Series and frames.

Checks judge the *effect* (the value computed, the column used) rather than the text, so any
completion that does the intended thing passes, not only the reference.

``live_state=True`` marks the cases whose completion needs a column, attribute, key or parameter
(``needs``) that only the live kernel reveals: it is not written in the active cell, and for
most of them (``hidden``) it is written nowhere in the notebook at all (column names generated
by code, read from an in-memory CSV and renamed, pivoted from generated values; attributes of
classes made by ``make_dataclass``); the others are attributes and keyword parameters of user
classes and functions defined in another cell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

__all__ = ["Markdown", "md", "Case", "Notebook", "notebooks", "all_cases", "select"]


@dataclass(frozen=True)
class Markdown:
    """A markdown cell of a notebook (not executed; the model sees it as the user's intent)."""

    source: str


def md(source: str) -> Markdown:
    return Markdown(source)


SetupCell = Union[str, Markdown]


@dataclass(frozen=True, kw_only=True)
class Case:
    id: str = ""  # "<notebook>-<n>" (set by ``Notebook``), stable: results files are compared by it
    prefix: str  # the active cell's text before the cursor
    reference: str  # a completion written by hand that does the intended thing
    check: str  # expression, true when the completion did the intended thing
    suffix: str = ""  # the active cell's text after the cursor
    intent: str = ""  # a markdown cell just above the active cell ("" = none)
    live_state: bool = False  # needs a name only the live state reveals
    needs: str = ""  # that name, as the reference writes it ("'temp_c'", "width_px", "window=")
    notebook: str = ""  # filled in by ``Notebook``

    @property
    def cell(self) -> str:
        """The active cell with the reference completion in place."""
        return self.prefix + self.reference + self.suffix

    @property
    def cursor(self) -> str:
        """Where the cursor is: "mid" (text follows on the same line) or "end" of a line."""
        rest = self.suffix.split("\n", 1)[0]
        return "mid" if rest.strip() else "end"

    @property
    def target_line(self) -> str:
        """The line at the cursor, completed with the reference."""
        before = self.prefix.rsplit("\n", 1)[-1]
        after = self.suffix.split("\n", 1)[0]
        return before + self.reference.split("\n", 1)[0] + (after if "\n" not in self.reference else "")


@dataclass(frozen=True)
class Notebook:
    id: str
    title: str  # a markdown cell at the top of the notebook
    setup: tuple[SetupCell, ...]
    cases: tuple[Case, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Cases are written inside their notebook; give them its id and a stable number.
        numbered = tuple(
            Case(**{**c.__dict__, "id": f"{self.id}-{i:02d}", "notebook": self.id}) for i, c in enumerate(self.cases, 1)
        )
        object.__setattr__(self, "cases", numbered)

    @property
    def code(self) -> list[str]:
        """The setup cells that run in the kernel, in order."""
        return [c for c in self.setup if isinstance(c, str)]

    def text(self) -> str:
        """Every cell's source, as the model could see it."""
        return "\n".join([self.title, *(c.source if isinstance(c, Markdown) else c for c in self.setup)])

    def hidden(self, case: Case) -> bool:
        """Whether ``case.needs`` is written nowhere in the notebook (setup, intent, active cell)."""
        name = case.needs.rstrip("=").strip("'\"")
        text = "\n".join([self.text(), case.intent, case.prefix, case.suffix])
        return bool(name) and re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text) is None


def notebooks() -> list[Notebook]:
    """Every notebook of the case set, in a fixed order."""
    from . import nb_numpy, nb_pandas, nb_plotting, nb_python

    return [*nb_pandas.NOTEBOOKS, *nb_numpy.NOTEBOOKS, *nb_python.NOTEBOOKS, *nb_plotting.NOTEBOOKS]


def all_cases() -> list[Case]:
    return [c for nb in notebooks() for c in nb.cases]


def select(n: int | None) -> list[Case]:
    """``n`` cases spread over all notebooks (round robin, so a subset keeps the variety); all if None."""
    pools = [list(nb.cases) for nb in notebooks()]
    order: list[Case] = []
    while any(pools):
        for pool in pools:
            if pool:
                order.append(pool.pop(0))
    return order if n is None else order[:n]
