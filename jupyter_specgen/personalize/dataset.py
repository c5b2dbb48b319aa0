"""Training examples from notebooks, the execution log and accepted suggestions (GIFT4Code style).

One example per code cell that ran cleanly: the notebook before it, the *intent* (the markdown
cell just before it, or the comment lines the cell starts with), the *spec* (a comment block
describing what the cell read, from the kernel's execution log when the log has that cell) and
the *target* (the cell's code). The comment lines the cell starts with stay in the prompt as its
``prefix``, as if the user had typed them and asked for the rest.

Examples travel to the backend as JSON lines with the fields of :class:`Example`; the backend's
``specgen_backend.training.examples`` reads them and renders the prompt with the serving
linearisation, so training and completion see the same text.

The held-out split is by notebook (a hash of its path), so a notebook's cells are never on both
sides and the split does not change when other notebooks are added.

With fewer than two notebooks there is nothing to hold out, so a job is refused
(:func:`refusal`) rather than trained unmeasured: we chose that over splitting one notebook's cells
by time, because the held-out cells of one notebook sit below the very cells trained on and share
their names and data, so such a measure would flatter the adapter; and the judge replays a held-out
cell after its notebook's cells, which a split notebook would make half training data.

Accepted suggestions are examples only once they were *kept* (``feedback.py``: still in the cell
when it next ran cleanly). Each example says why it is used (:func:`reason_of`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from ..kernel.messages import LogEntry
from ..prompt_specs import spec_block
from .feedback import FeedbackRecord
from .notebooks import ScannedNotebook

__all__ = ["Example", "DatasetOptions", "Dataset", "examples_from_notebook", "examples_from_feedback",
           "build_dataset", "reason_of", "refusal", "MIN_NOTEBOOKS", "write_jsonl", "read_jsonl"]

# One notebook to train on and one to measure on.
MIN_NOTEBOOKS = 2


@dataclass(frozen=True)
class Example:
    notebook: str  # relative path; the unit of the held-out split
    cells_before: list[dict] = field(default_factory=list)  # [{cell_type, source}]
    intent: str = ""
    spec: str = ""  # comment block, "" when execution told nothing
    prefix: str = ""  # the start of the active cell kept in the prompt (its leading comments)
    target: str = ""  # what the model should write
    origin: str = "notebook"  # "notebook" | "feedback"
    cell_index: int = -1  # position of the target cell in its notebook (-1: not from a notebook file)


@dataclass(frozen=True)
class DatasetOptions:
    context_cells: int = 8  # cells before the target kept in the example (the backend cuts by tokens too)
    min_target_chars: int = 4  # skip trivial cells ("df", "x")
    max_target_chars: int = 4000
    require_executed: bool = True  # drop code cells with no execution count (never ran)
    heldout_fraction: float = 0.2  # share of notebooks held out for evaluation
    spec_chars: int = 1200


@dataclass
class Dataset:
    train: list[Example]
    heldout: list[Example]
    notebooks_train: list[str]
    notebooks_heldout: list[str]
    dropped: dict[str, int]  # reason -> count

    def summary(self) -> dict:
        return {"train": len(self.train), "heldout": len(self.heldout), "notebooks_train": self.notebooks_train,
                "notebooks_heldout": self.notebooks_heldout, "dropped": dict(self.dropped)}


def _split_leading_comments(source: str) -> tuple[str, str]:
    lines = source.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        i += 1
    return "".join(lines[:i]), "".join(lines[i:])


def _comment_text(comments: str) -> str:
    return "\n".join(line.lstrip().lstrip("#").strip() for line in comments.splitlines()).strip()


def _log_by_code(entries: Iterable[LogEntry]) -> dict[str, LogEntry]:
    """The latest successful log entry for each code text (the log is oldest first)."""
    out: dict[str, LogEntry] = {}
    for entry in entries:
        key = entry.code.strip()
        if entry.success:
            out[key] = entry
        else:
            out.pop(key, None)
    return out


def examples_from_notebook(notebook: ScannedNotebook, *, log_entries: Sequence[LogEntry] = (),
                           options: DatasetOptions = DatasetOptions(),
                           dropped: Optional[dict[str, int]] = None) -> list[Example]:
    dropped = dropped if dropped is not None else {}
    by_code = _log_by_code(log_entries)
    out = []
    cells = notebook.cells
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        source = cell.source
        entry = by_code.get(source.strip())
        if cell.errored:
            dropped["raised"] = dropped.get("raised", 0) + 1
            continue
        if options.require_executed and not cell.executed and entry is None:
            dropped["never ran"] = dropped.get("never ran", 0) + 1
            continue
        prefix, target = _split_leading_comments(source)
        target = target.strip("\n")
        if not (options.min_target_chars <= len(target.strip()) <= options.max_target_chars):
            dropped["size"] = dropped.get("size", 0) + 1
            continue
        intent = _comment_text(prefix)
        if not intent and i > 0 and cells[i - 1].cell_type == "markdown":
            intent = cells[i - 1].source.strip()
        spec = spec_block(entry.read, style="full", max_chars=options.spec_chars) if entry else ""
        before = [{"cell_type": c.cell_type, "source": c.source}
                  for c in cells[max(0, i - options.context_cells): i] if c.cell_type != "raw"]
        out.append(Example(notebook=notebook.path, cells_before=before, intent=intent, spec=spec,
                           prefix=prefix, target=target, cell_index=i))
    return out


def examples_from_feedback(records: Iterable[FeedbackRecord], *, options: DatasetOptions = DatasetOptions()) -> list[Example]:
    """Kept suggestions become examples: the text the user had typed, then what they took. An
    accept that is pending, or whose text was changed or raised, never does."""
    out = []
    for record in records:
        if not record.trainable or len(record.suggestion.strip()) < options.min_target_chars:
            continue
        out.append(Example(notebook=record.notebook, cells_before=list(record.cells_before[-options.context_cells:]),
                           intent=_comment_text(_split_leading_comments(record.prefix)[0]), prefix=record.prefix,
                           target=record.suggestion, origin="feedback"))
    return out


def _heldout(notebook: str, fraction: float) -> bool:
    digest = hashlib.sha256(notebook.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def build_dataset(notebooks: Sequence[ScannedNotebook], *, log_entries: Sequence[LogEntry] = (),
                  feedback: Sequence[FeedbackRecord] = (), options: DatasetOptions = DatasetOptions()) -> Dataset:
    """All examples, split by notebook; at least one notebook is held out when there are two or more."""
    dropped: dict[str, int] = {}
    examples: list[Example] = []
    for nb in notebooks:
        examples.extend(examples_from_notebook(nb, log_entries=log_entries, options=options, dropped=dropped))
    examples.extend(examples_from_feedback(feedback, options=options))
    names = sorted({e.notebook for e in examples})
    held = {n for n in names if _heldout(n, options.heldout_fraction)}
    if not held and len(names) >= 2 and options.heldout_fraction > 0:
        # A deterministic fallback so small collections still get an evaluation split.
        held = {min(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())}
    if held == set(names) and len(names) >= 2:
        held.discard(max(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest()))
    return Dataset(
        train=[e for e in examples if e.notebook not in held],
        heldout=[e for e in examples if e.notebook in held],
        notebooks_train=[n for n in names if n not in held],
        notebooks_heldout=[n for n in names if n in held],
        dropped=dropped,
    )


def reason_of(example: Example) -> str:
    """Why ``example`` is used, in the user's words."""
    if example.origin == "feedback":
        return "a suggestion you kept (it was still in the cell when the cell ran without error)"
    if example.spec:
        return "a cell you wrote that ran without error (with what it read, from the kernel's log)"
    return "a cell you wrote that ran without error"


def refusal(*, train: Sequence[Example], heldout: Sequence[Example], root: str) -> str:
    """Why a job on these examples cannot start and what to do, or "" when it can."""
    if not train and not heldout:
        return (f"There is nothing to train on yet: personalization learns from code cells that ran without error "
                f"in the notebooks under {root}. Run and save a few notebooks first.")
    names = sorted({e.notebook for e in [*train, *heldout]})
    if len(names) < MIN_NOTEBOOKS or not heldout or not train:
        have = f"you have {len(names)}" + (f" ({', '.join(names[:3])})" if names else "")
        return (f"Training needs at least {MIN_NOTEBOOKS} notebooks with code that ran without error: one is kept "
                f"aside to measure whether training helps; {have}. Run and save another notebook under {root}, "
                f"then start again.")
    return ""


def write_jsonl(examples: Iterable[Example], path: str | Path) -> int:
    """Write atomically (temp file + replace); return the number written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(asdict(example)) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: str | Path) -> list[Example]:
    with open(path, encoding="utf-8") as f:
        return [Example(**json.loads(line)) for line in f if line.strip()]
