"""Is any case text in the embedded model's training data?

The corpus is rebuilt exactly as the trainer built it (``tools/corpus.py``'s ``collect_corpus``
with its default configuration: the same packages, budgets, seed and sampling; the installed
versions are those in the model's ``MANIFEST.json`` on the machine that trained it), train and
held-out documents both. A case is contaminated when

- the line at its cursor, completed with the reference, appears as a line of the corpus
  (whitespace-normalised), or
- any run of ``N_GRAM`` consecutive tokens (words and punctuation marks) of its notebook's cells
  or its active cell with the reference in place appears in the corpus (the 13-gram overlap test
  of the GPT-3 paper's decontamination).

    python benchmarks/bench_quality.py --decontaminate      # about a minute on 2 cores

prints each hit and exits 1 when there is one.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from . import Case, Markdown, Notebook

__all__ = ["N_GRAM", "tokens", "ngrams", "case_units", "contamination", "training_documents"]

N_GRAM = 13
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def ngrams(toks: list[str], n: int = N_GRAM) -> Iterable[tuple[str, ...]]:
    return (tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


def _norm_line(line: str) -> str:
    return " ".join(line.split())


def case_units(nb: Notebook, case: Case) -> list[str]:
    """The texts of a case the model could have memorised: every cell, and the completed cell."""
    cells = [nb.title, *(c.source if isinstance(c, Markdown) else c for c in nb.setup), case.intent, case.cell]
    return [c for c in cells if c]


def training_documents() -> Iterable[str]:
    """The texts of the default model's training corpus (train and held-out), rebuilt locally."""
    tools = Path(__file__).resolve().parents[2] / "tools"
    sys.path.insert(0, str(tools))
    try:
        from corpus import collect_corpus
    finally:
        sys.path.remove(str(tools))
    corpus = collect_corpus()
    for doc in (*corpus.train, *corpus.heldout):
        yield doc.text


def contamination(notebooks: list[Notebook], documents: Iterable[str]) -> dict[str, list[str]]:
    """Case id -> what of it was found in ``documents`` (empty when the case set is clean)."""
    grams: dict[tuple[str, ...], set[str]] = defaultdict(set)
    lines: dict[str, set[str]] = defaultdict(set)
    for nb in notebooks:
        for case in nb.cases:
            for unit in case_units(nb, case):
                for gram in ngrams(tokens(unit)):
                    grams[gram].add(case.id)
            lines[_norm_line(case.target_line)].add(case.id)
    hits: dict[str, list[str]] = defaultdict(list)
    found_grams: set[tuple[str, ...]] = set()
    for text in documents:
        for line in text.splitlines():
            key = _norm_line(line)
            if key in lines:
                for cid in lines.pop(key):
                    hits[cid].append(f"target line in corpus: {key!r}")
        for gram in ngrams(tokens(text)):
            if gram in grams and gram not in found_grams:
                found_grams.add(gram)
                for cid in grams[gram]:
                    hits[cid].append(f"{N_GRAM}-gram in corpus: {' '.join(gram)!r}")
    return dict(hits)
