"""Accepted and rejected suggestions, per user, in SQLite (WAL) under the Jupyter data dir.

Every query is scoped by ``user``: there is no method that reads across users, so one user's
feedback cannot end up in another's training data.
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

__all__ = ["FeedbackRecord", "FeedbackStore", "default_feedback_path"]

log = logging.getLogger(__name__)

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


def default_feedback_path() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "specgen" / "feedback.sqlite"


@dataclass(frozen=True)
class FeedbackRecord:
    notebook: str
    prefix: str
    suggestion: str
    accepted: bool
    cells_before: list[dict] = field(default_factory=list)
    created: float = 0.0


class FeedbackStore:
    """Thread-safe; one connection guarded by a lock (writes are rare and small)."""

    def __init__(self, path: Optional[str | Path] = None):
        self.path = Path(path) if path is not None else default_feedback_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def record(self, user: str, record: FeedbackRecord) -> None:
        if not user:
            raise ValueError("feedback needs a user name")
        with self._lock:
            self._db.execute(
                "INSERT INTO feedback (user, created, notebook, cells_before, prefix, suggestion, accepted)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user, record.created or time.time(), record.notebook, json.dumps(record.cells_before),
                 record.prefix, record.suggestion, int(record.accepted)),
            )

    def records(self, user: str, *, accepted: Optional[bool] = None, limit: int = 10_000) -> list[FeedbackRecord]:
        """This user's feedback, oldest first."""
        query = "SELECT notebook, cells_before, prefix, suggestion, accepted, created FROM feedback WHERE user = ?"
        args: list = [user]
        if accepted is not None:
            query += " AND accepted = ?"
            args.append(int(accepted))
        query += " ORDER BY created, id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [FeedbackRecord(notebook=nb, cells_before=json.loads(cb), prefix=p, suggestion=s,
                               accepted=bool(a), created=c) for nb, cb, p, s, a, c in rows]

    def counts(self, user: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT accepted, COUNT(*) FROM feedback WHERE user = ? GROUP BY accepted",
                                    (user,)).fetchall()
        by = dict(rows)
        return {"accepted": by.get(1, 0), "rejected": by.get(0, 0)}

    def close(self) -> None:
        with self._lock:
            self._db.close()
