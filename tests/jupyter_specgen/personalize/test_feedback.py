"""Accepted means it survived: an accept is pending until its cell next runs; only a suggestion still in
the cell when that run succeeds is trained on; an old feedback.sqlite opens and keeps its rows."""

from __future__ import annotations

import asyncio
import sqlite3

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_specgen.backend_client import BackendError
from jupyter_specgen.personalize.dataset import DatasetOptions, build_dataset
from jupyter_specgen.personalize.feedback import FeedbackStore, accept_outcome
from jupyter_specgen.personalize.service import PersonalizeService, PersonalizeSettings
from jupyter_specgen.protocol import FeedbackReport, parse_body

SUGGESTION = "sales.groupby('region').sum()"


def _service(tmp_path, root=None) -> PersonalizeService:
    root = root or tmp_path
    return PersonalizeService(client=None, root_dir=str(root), kernels=None,
                              feedback=FeedbackStore(tmp_path / "feedback.sqlite"),
                              settings=PersonalizeSettings(dataset=DatasetOptions(heldout_fraction=0.0)),
                              push=lambda *_: None)


def _report(key: str, *, ran=None, accepted=True, suggestion=SUGGESTION) -> FeedbackReport:
    body = {"path": "a.ipynb", "prefix": "totals = ", "suggestion": suggestion, "accepted": accepted,
            "cell_id": "c1", "key": key, "cells": [{"cell_type": "code", "source": "import pandas as pd"}], "active": 1}
    if ran is not None:
        body["ran"] = {"source": ran[0], "success": ran[1]}
    import json

    return parse_body(FeedbackReport, json.dumps(body))


def _trained_on(service, user="alice") -> list[str]:
    collected = asyncio.run(service.collect(user))
    return [e.target for e in collected.train if e.origin == "feedback"]


def test_the_rule_kept_changed_raised():
    """Still in the cell and the run succeeded: kept; gone or edited: changed; the run raised: raised."""
    assert accept_outcome(SUGGESTION, f"totals = {SUGGESTION}\n", True) == "kept"
    assert accept_outcome(SUGGESTION, f"totals = {SUGGESTION}   \n\n", True) == "kept"  # trailing space trimmed
    assert accept_outcome(SUGGESTION, "totals = sales.sum()", True) == "changed"
    assert accept_outcome(SUGGESTION, "totals = sales.groupby('region').mean()", True) == "changed"
    assert accept_outcome(SUGGESTION, "", True) == "changed"
    assert accept_outcome(SUGGESTION, f"totals = {SUGGESTION}", False) == "raised"
    assert accept_outcome("a = 1\nb = 2", "a = 1\nb = 3", True) == "changed"  # one line of two rewritten


def test_accepted_then_deleted_is_not_a_positive_example(tmp_path):
    """Tab, then the suggestion deleted before the cell ran cleanly: stored as changed, counted, never trained on."""
    service = _service(tmp_path)
    assert asyncio.run(service.record_feedback("alice", _report("k1"))) == "pending"
    assert _trained_on(service) == []  # pending is not positive either
    assert asyncio.run(service.record_feedback("alice", _report("k1", ran=("totals = 0", True)))) == "changed"
    assert _trained_on(service) == []
    summary = asyncio.run(service.collect("alice")).summary
    assert (summary.feedback_accepted, summary.feedback_changed, summary.feedback_kept, summary.from_feedback) == (1, 1, 0, 0)
    # A later run with the text typed back does not turn a decided accept into a kept one.
    assert asyncio.run(service.record_feedback("alice", _report("k1", ran=(f"totals = {SUGGESTION}", True)))) == "changed"
    assert _trained_on(service) == []


def test_accepted_and_the_cell_raised_is_not_a_positive_example(tmp_path):
    """The suggestion was still there but its cell raised: stored as raised, never trained on."""
    service = _service(tmp_path)
    asyncio.run(service.record_feedback("alice", _report("k1")))
    assert asyncio.run(service.record_feedback("alice", _report("k1", ran=(f"totals = {SUGGESTION}", False)))) == "raised"
    assert _trained_on(service) == []
    assert asyncio.run(service.collect("alice")).summary.feedback_raised == 1


def test_accepted_and_survived_a_clean_run_is_a_positive_example(tmp_path):
    """The suggestion still in its cell when the cell ran without error: kept, one example, with its reason."""
    service = _service(tmp_path)
    asyncio.run(service.record_feedback("alice", _report("k1")))
    asyncio.run(service.record_feedback("alice", _report("k1", ran=(f"totals = {SUGGESTION}\nprint(totals)", True))))
    assert _trained_on(service) == [SUGGESTION]
    summary = asyncio.run(service.collect("alice")).summary
    assert (summary.feedback_accepted, summary.feedback_kept, summary.feedback_pending, summary.from_feedback) == (1, 1, 0, 1)
    [listed] = [e for e in summary.examples if e.cell_index == -1]
    assert "suggestion you kept" in listed.reason and listed.preview == SUGGESTION
    assert _trained_on(service, "bob") == []  # alice's, not bob's


def test_run_reports_that_contradict_themselves_are_refused(tmp_path):
    """A run report for a dismissal, or without the key of its accept, is a clear 400 error."""
    service = _service(tmp_path)
    with pytest.raises(BackendError, match="dismissed suggestion has none"):
        asyncio.run(service.record_feedback("alice", _report("k1", accepted=False, ran=("x", True))))
    with pytest.raises(BackendError, match="needs the key"):
        asyncio.run(service.record_feedback("alice", _report("", ran=("x", True))))


def test_an_old_feedback_database_opens_and_its_rows_are_never_trained_on(tmp_path):
    """A feedback.sqlite of the first schema gains the columns; its accepts and dismissals are 'unchecked'."""
    path = tmp_path / "feedback.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, created REAL NOT NULL,
            notebook TEXT NOT NULL, cells_before TEXT NOT NULL, prefix TEXT NOT NULL, suggestion TEXT NOT NULL,
            accepted INTEGER NOT NULL);
        INSERT INTO feedback (user, created, notebook, cells_before, prefix, suggestion, accepted)
            VALUES ('alice', 1.0, 'a.ipynb', '[]', 'x = ', 'junk_taken_by_accident()', 1),
                   ('alice', 2.0, 'a.ipynb', '[]', 'x = ', 'other()', 0);
    """)
    db.commit()
    db.close()
    store = FeedbackStore(path)
    counts = store.counts("alice")
    assert (counts["accepted"], counts["unchecked"], counts["rejected"], counts["kept"]) == (1, 2, 0, 0)
    assert build_dataset([], feedback=store.records("alice"), options=DatasetOptions(heldout_fraction=0)).train == []
    store.close()
    FeedbackStore(path).close()  # and opens again once migrated


def test_summary_lists_why_each_notebook_example_is_used(tmp_path):
    """Every example of the summary carries a plain reason and a preview of its target."""
    nbformat.write(new_notebook(cells=[new_code_cell("sales = load('sales.csv')", execution_count=1)]),
                   str(tmp_path / "a.ipynb"))
    summary = asyncio.run(_service(tmp_path).collect("alice")).summary
    assert [(e.notebook, e.cell_index, e.reason, e.preview) for e in summary.examples] == [
        ("a.ipynb", 0, "a cell you wrote that ran without error", "sales = load('sales.csv')")]
