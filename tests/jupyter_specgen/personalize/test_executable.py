"""Executable rate: completions run after the notebook's earlier cells, in a guarded fork, with its data."""

from __future__ import annotations

import json
import os

import pytest

from jupyter_specgen.kernel.forking import fork_available
from jupyter_specgen.personalize.dataset import Example
from jupyter_specgen.personalize.executable import executable_rate

pytestmark = pytest.mark.skipif(not fork_available(), reason="validation needs os.fork")


def test_rate_counts_completions_that_run_with_the_notebooks_data(tmp_path):
    """A completion that runs counts, one that raises does not, and an example without its data is left out."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "rows.json").write_text(json.dumps([1, 2, 3]))
    load = [{"cell_type": "code", "source": "import json\nrows = json.load(open('rows.json'))"}]
    examples = [
        Example(notebook="proj/a.ipynb", cells_before=load, target="total = sum(rows)"),
        Example(notebook="proj/a.ipynb", cells_before=load, target="total = sum(rows)"),
        Example(notebook="elsewhere/b.ipynb", cells_before=load, target="total = sum(rows)"),
    ]
    cwd = os.getcwd()
    report = executable_rate(examples, ["total = sum(rows)", "total = sum(rowz)", "total = sum(rows)"],
                             root=tmp_path)
    assert (report.ran, report.evaluable, report.skipped) == (1, 2, 1)
    assert report.rate == 0.5
    assert os.getcwd() == cwd  # the chdir happened in the fork only


def test_completions_cannot_write_files(tmp_path):
    """A completion that writes a file is refused by the fork's guards and does not count as running."""
    examples = [Example(notebook="a.ipynb", target="x = 1")]
    report = executable_rate(examples, ["open('out.txt', 'w').write('x')"], root=tmp_path)
    assert report.ran == 0 and report.evaluable == 1
    assert not (tmp_path / "out.txt").exists()
