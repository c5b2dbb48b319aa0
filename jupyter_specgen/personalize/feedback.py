"""Accepted and dismissed suggestions, per user, in SQLite (WAL) under the Jupyter data dir.

Every query is scoped by ``user``: there is no method that reads across users, so one user's
feedback cannot end up in another's training data.

Accepted means it survived
--------------------------
Pressing Tab is not yet a vote for a suggestion: junk taken by accident, then deleted, must not
become training data. An accepted suggestion is a positive example only if its text is still in
its cell the next time that cell runs, and that run succeeds. So an accept is stored in two steps:

1. When Tab takes it, the browser reports it with a ``key`` of its own and no ``ran``: stored with
   outcome ``pending`` (counted, never trained on).
2. When that cell next runs, the browser reports the same ``key`` again with ``ran``: the cell's text
   as it was sent to the kernel and whether the run succeeded. :func:`accept_outcome` decides, here,
   from those facts: ``kept`` (trained on), ``changed`` (the text was deleted or rewritten) or
   ``raised`` (the cell raised). The pending row is updated in place.

Why the browser observes the run and this side decides: the browser is the only place that knows
*which* cell ran (JupyterLab's cell id), what text it sent and whether it raised, at the moment
it happens. The kernel's execution log (``kernel/execlog.py``) has no cell id and is a ring
buffer that a kernel restart empties, and a saved notebook keeps the execution count of a run
that may predate the accept; neither can tell "that cell ran without the suggestion" from
"another cell ran". The decision itself is a pure function on this side, so the rule is one
place and tested without a browser. What can go wrong is conservative: a tab closed before the
cell runs leaves the accept ``pending`` forever, which is never trained on.

A dismissal (``accepted = 0``, the browser reports only suggestions typed over or escaped) has
outcome ``dismissed``. Rows written before these rules have outcome ``unchecked`` (the column's
default), accepts and dismissals alike: the old browser counted a request elsewhere or a run as a
dismissal and took every Tab as a vote, so they are shown apart and never trained on.

The table gains its columns with ``ALTER TABLE ... ADD COLUMN ... DEFAULT``, so a feedback.sqlite
made by an older version opens and keeps its rows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["FeedbackRecord", "FeedbackStore", "OUTCOMES", "accept_outcome", "default_feedback_path"]

log = logging.getLogger(__name__)

# Outcomes of a row. Only "kept" is trained on.
OUTCOMES = ("kept", "changed", "raised", "pending", "unchecked", "dismissed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    created REAL NOT NULL,
    notebook TEXT NOT NULL,
    cells_before TEXT NOT NULL,   -- JSON list of {cell_type, source}
    prefix TEXT NOT NULL,         -- the active cell's text before the cursor
    suggestion TEXT NOT NULL,
    accepted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user, created);
"""

# Columns added after the first release: (name, declaration). Existing rows take the default.
_ADDED_COLUMNS = (
    ("outcome", "TEXT NOT NULL DEFAULT 'unchecked'"),
    ("key", "TEXT NOT NULL DEFAULT ''"),  # the browser's name for one accept ('' for dismissals)
    ("cell_id", "TEXT NOT NULL DEFAULT ''"),
)


def default_feedback_path() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "specgen" / "feedback.sqlite"


def _lines(text: str) -> str:
    """``text`` with trailing spaces and blank lines at both ends removed: an editor that trims
    trailing whitespace on run has not rewritten the suggestion."""
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n")


def accept_outcome(suggestion: str, ran_source: str, success: bool) -> str:
    """What an accepted ``suggestion`` became when its cell next ran with text ``ran_source``:
    ``"raised"`` if the run failed, ``"kept"`` if the suggestion is still in the cell word for word
    (line ends aside), else ``"changed"``."""
    if not success:
        return "raised"
    wanted = _lines(suggestion)
    if wanted and wanted in _lines(ran_source):
        return "kept"
    return "changed"


@dataclass(frozen=True)
class FeedbackRecord:
    notebook: str
    prefix: str
    suggestion: str
    accepted: bool
    cells_before: list[dict] = field(default_factory=list)
    created: float = 0.0
    # "pending" for a new accept, "dismissed" for a dismissal, or a decided outcome (see OUTCOMES).
    outcome: str = ""
    key: str = ""
    cell_id: str = ""

    @property
    def trainable(self) -> bool:
        return self.accepted and self.outcome == "kept"


class FeedbackStore:
    """Thread-safe; one connection guarded by a lock (writes are rare and small)."""

    def __init__(self, path: Optional[str | Path] = None):
        self.path = Path(path) if path is not None else default_feedback_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(feedback)")}
        for name, declaration in _ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE feedback ADD COLUMN {name} {declaration}")
                log.info("feedback store %s: added column %s", self.path, name)
        self._db.execute("CREATE INDEX IF NOT EXISTS feedback_key ON feedback (user, key)")

    def record(self, user: str, record: FeedbackRecord) -> str:
        """Store ``record``; return the outcome stored.

        An accept with a ``key`` that this user already has pending updates that row to the record's
        outcome (the report of the cell's run); an outcome already decided is never changed again (a
        later run of the cell does not turn "changed" into "kept")."""
        if not user:
            raise ValueError("feedback needs a user name")
        outcome = record.outcome or ("pending" if record.accepted else "dismissed")
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown feedback outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
        if record.accepted and outcome == "dismissed":
            raise ValueError("an accepted suggestion cannot have the outcome 'dismissed'")
        if not record.accepted and outcome != "dismissed":
            raise ValueError(f"a dismissed suggestion has the outcome 'dismissed', not {outcome!r}")
        with self._lock:
            if record.accepted and record.key:
                row = self._db.execute("SELECT id, outcome FROM feedback WHERE user = ? AND key = ? ORDER BY id LIMIT 1",
                                       (user, record.key)).fetchone()
                if row is not None:
                    if row[1] == "pending" and outcome != "pending":
                        self._db.execute("UPDATE feedback SET outcome = ? WHERE id = ?", (outcome, row[0]))
                        return outcome
                    return row[1]
            self._db.execute(
                "INSERT INTO feedback (user, created, notebook, cells_before, prefix, suggestion, accepted, outcome,"
                " key, cell_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user, record.created or time.time(), record.notebook, json.dumps(record.cells_before),
                 record.prefix, record.suggestion, int(record.accepted), outcome, record.key, record.cell_id),
            )
        return outcome

    def records(self, user: str, *, accepted: Optional[bool] = None, outcome: Optional[str] = None,
                limit: int = 10_000) -> list[FeedbackRecord]:
        """This user's feedback, oldest first (``outcome="kept"``: what training may use)."""
        query = ("SELECT notebook, cells_before, prefix, suggestion, accepted, created, outcome, key, cell_id"
                 " FROM feedback WHERE user = ?")
        args: list = [user]
        if accepted is not None:
            query += " AND accepted = ?"
            args.append(int(accepted))
        if outcome is not None:
            query += " AND outcome = ?"
            args.append(outcome)
        query += " ORDER BY created, id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [FeedbackRecord(notebook=nb, cells_before=json.loads(cb), prefix=p, suggestion=s, accepted=bool(a),
                               created=c, outcome=o, key=k, cell_id=ci) for nb, cb, p, s, a, c, o, k, ci in rows]

    def counts(self, user: str) -> dict[str, int]:
        """One count per outcome, ``accepted`` (every accept, whatever became of it) and ``rejected``
        (the dismissals: typed over or escaped)."""
        with self._lock:
            rows = self._db.execute("SELECT accepted, outcome, COUNT(*) FROM feedback WHERE user = ?"
                                    " GROUP BY accepted, outcome", (user,)).fetchall()
        out = {"accepted": 0, **{o: 0 for o in OUTCOMES}}
        for accepted, outcome, n in rows:
            out["accepted"] += n if accepted else 0
            if outcome in out:
                out[outcome] += n
        # Dismissals counted under the old rules (a request elsewhere, a run) are "unchecked", not these.
        out["rejected"] = out["dismissed"]
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
