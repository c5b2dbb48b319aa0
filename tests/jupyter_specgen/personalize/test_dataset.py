"""Personalization data on the Jupyter side: notebook scan, execution-log specs, feedback, split."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from jupyter_specgen.kernel.messages import Column, LogEntry, Spec
from jupyter_specgen.personalize.dataset import (DatasetOptions, build_dataset, examples_from_notebook, read_jsonl,
                                                 write_jsonl)
from jupyter_specgen.personalize.feedback import FeedbackRecord, FeedbackStore
from jupyter_specgen.personalize.notebooks import ScanOptions, scan_notebooks


def _write(path, cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells), str(path))


@pytest.fixture
def root(tmp_path):
    _write(tmp_path / "a.ipynb", [
        new_code_cell("import pandas as pd", execution_count=1),
        new_markdown_cell("Load the sales"),
        new_code_cell("sales = pd.read_csv('s.csv')", execution_count=2),
        new_code_cell("# total per region\nsales.groupby('region').sum()", execution_count=3),
        new_code_cell("1 / 0", execution_count=4,
                      outputs=[new_output("error", ename="ZeroDivisionError", evalue="x", traceback=[])]),
        new_code_cell("never_ran = 1"),
    ])
    _write(tmp_path / "sub" / "b.ipynb", [new_code_cell("x = compute(1)", execution_count=1)])
    _write(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb", [new_code_cell("dup = 1", execution_count=1)])
    _write(tmp_path / ".venv" / "c.ipynb", [new_code_cell("hidden = 1", execution_count=1)])
    (tmp_path / "broken.ipynb").write_text("{not json")
    return tmp_path


def test_scan_skips_checkpoints_hidden_and_unreadable(root):
    """Checkpoints and hidden folders are not scanned; an unreadable notebook is reported, not fatal."""
    report = scan_notebooks(root)
    assert [nb.path for nb in report.notebooks] == ["a.ipynb", "sub/b.ipynb"]
    assert "broken.ipynb" in report.skipped


def test_scan_caps_file_size_and_count(root):
    """Files over the byte cap are skipped with the reason; the file cap stops the scan and says so."""
    big = scan_notebooks(root, ScanOptions(max_file_bytes=300))
    assert "a.ipynb" in big.skipped and "bytes" in big.skipped["a.ipynb"]
    capped = scan_notebooks(root, ScanOptions(max_files=1))
    assert len(capped.notebooks) == 1 and capped.truncated


def test_examples_drop_failed_and_unrun_cells_and_take_intents(root):
    """Cells that raised or never ran are dropped; the intent is the preceding markdown or the leading comment."""
    nb = scan_notebooks(root).notebooks[0]
    dropped: dict = {}
    examples = examples_from_notebook(nb, dropped=dropped)
    targets = [e.target for e in examples]
    assert targets == ["import pandas as pd", "sales = pd.read_csv('s.csv')", "sales.groupby('region').sum()"]
    assert dropped == {"raised": 1, "never ran": 1}
    assert examples[1].intent == "Load the sales"
    assert examples[2].intent == "total per region" and examples[2].prefix == "# total per region\n"
    assert examples[2].cells_before[-1] == {"cell_type": "code", "source": "sales = pd.read_csv('s.csv')"}


def test_execution_log_supplies_the_spec(root):
    """A cell the execution log saw succeed gets a spec comment of what it read."""
    nb = scan_notebooks(root).notebooks[0]
    frame = Spec(name="sales", type="pandas.DataFrame", kind="dataframe", shape=[3, 2],
                 columns=[Column(name="region", dtype="object"), Column(name="amount", dtype="int64")])
    entry = LogEntry(execution_count=3, code="# total per region\nsales.groupby('region').sum()", success=True,
                     read=[frame])
    examples = examples_from_notebook(nb, log_entries=[entry])
    assert "region" in examples[2].spec and "sales" in examples[2].spec
    assert examples[1].spec == ""


def test_split_is_by_notebook_and_deterministic(tmp_path):
    """No notebook is on both sides of the split, and the split does not depend on scan order."""
    for i in range(10):
        _write(tmp_path / f"n{i}.ipynb", [new_code_cell(f"value_{i} = {i} * 2", execution_count=1),
                                          new_code_cell(f"other_{i} = value_{i} + 1", execution_count=2)])
    notebooks = scan_notebooks(tmp_path).notebooks
    first = build_dataset(notebooks)
    second = build_dataset(list(reversed(notebooks)))
    assert first.notebooks_heldout and first.notebooks_train
    assert set(first.notebooks_heldout) == set(second.notebooks_heldout)
    assert not {e.notebook for e in first.train} & {e.notebook for e in first.heldout}


def test_jsonl_round_trip(root, tmp_path):
    """Examples written as JSON lines read back equal, with the fields the backend expects."""
    examples = examples_from_notebook(scan_notebooks(root).notebooks[0])
    path = tmp_path / "out.jsonl"
    assert write_jsonl(examples, path) == len(examples)
    assert read_jsonl(path) == examples
    fields = set(json.loads(path.read_text().splitlines()[0]))
    assert {"notebook", "cells_before", "intent", "spec", "prefix", "target"} <= fields


def test_feedback_is_per_user_and_kept_suggestions_become_examples(tmp_path):
    """Feedback queries never cross users; kept suggestions (not pending or dismissed ones) become examples."""
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.record("alice", FeedbackRecord(notebook="a.ipynb", prefix="df = ", suggestion="zq_tidy(raw)", accepted=True,
                                         outcome="kept"))
    store.record("alice", FeedbackRecord(notebook="a.ipynb", prefix="df = ", suggestion="later()", accepted=True))
    store.record("alice", FeedbackRecord(notebook="a.ipynb", prefix="df = ", suggestion="bad()", accepted=False))
    store.record("bob", FeedbackRecord(notebook="b.ipynb", prefix="x = ", suggestion="bob_secret()", accepted=True,
                                       outcome="kept"))
    counts = store.counts("alice")
    assert (counts["accepted"], counts["rejected"], counts["kept"], counts["pending"]) == (2, 1, 1, 1)
    assert [r.suggestion for r in store.records("bob")] == ["bob_secret()"]
    data = build_dataset([], feedback=store.records("alice"), options=DatasetOptions(heldout_fraction=0))
    assert [e.target for e in data.train] == ["zq_tidy(raw)"] and data.train[0].origin == "feedback"
    store.close()
    reopened = FeedbackStore(tmp_path / "fb.sqlite")
    assert reopened.counts("alice") == counts
    reopened.close()
