"""tools/executed_corpus.py: docstring examples run cell by cell, rendered the way the completion
path renders a live notebook (the same ``grounded_context`` and ``linearise``)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import executed_corpus  # noqa: E402
from corpus import CELL_SEPARATOR  # noqa: E402

NOTEBOOK = CELL_SEPARATOR.join([
    "# total: Sum the units per region.",
    "import pandas as pd\nsales = pd.DataFrame({'region': ['n', 's'], 'units': [3, 4]})",
    "sales.groupby('region')['units'].sum()",
])


def test_specs_of_what_a_cell_reads_are_taken_before_it_runs():
    ran = executed_corpus.run_notebook(NOTEBOOK)
    assert [cell for cell, _ in ran] == NOTEBOOK.split(CELL_SEPARATOR)[1:]
    assert ran[0][1] == []  # nothing defined before the first cell
    assert [s.name for s in ran[1][1]] == ["sales", "pd"]
    assert [c.name for c in ran[1][1][0].columns] == ["region", "units"]


def test_a_cell_that_raises_ends_the_notebook():
    ran = executed_corpus.run_notebook(CELL_SEPARATOR.join(["# h", "x = 1", "y = missing + 1", "z = x"]))
    assert [cell for cell, _ in ran] == ["x = 1"]


def test_a_notebook_that_hangs_is_cut_by_its_alarm(monkeypatch):
    monkeypatch.setattr(executed_corpus, "NOTEBOOK_TIMEOUT_S", 1)
    ran = executed_corpus.run_notebook(CELL_SEPARATOR.join(["# h", "a = 1", "while True:\n    pass", "b = 2"]))
    assert [cell for cell, _ in ran] == ["a = 1"]


def test_both_forms_are_the_prompt_the_backend_builds_for_that_cursor():
    from jupyter_specgen.completions.context import grounded_context
    from specgen_backend.prompt import FIM_FORMATS, build_prompt
    from specgen_backend.protocol import Cell, CompletionContext

    ran = executed_corpus.run_notebook(NOTEBOOK)
    forms = dict((form, text) for form, text, _ in executed_corpus.render_forms(
        NOTEBOOK.split(CELL_SEPARATOR)[0], ran, 1, random.Random(3)))
    causal, fim = forms["causal"], forms["fim"]
    assert "# sales: pandas.DataFrame (2 rows × 2 columns)\n#     region:" in causal
    assert causal.endswith("\nsales.groupby('region')['units'].sum()")

    # The FIM document is the backend's FIM prompt for its cursor, followed by the rest of the line.
    prompt_part, middle = fim.split(executed_corpus.FIM_MIDDLE)
    head = prompt_part.split(executed_corpus.FIM_SUFFIX)[0].removeprefix(executed_corpus.FIM_PREFIX)
    cursor_prefix = head.rsplit("\n", 1)[-1]
    assert cursor_prefix + middle == "sales.groupby('region')['units'].sum()"
    cells = [Cell(cell_type="markdown", source="total: Sum the units per region."),
             *(Cell(cell_type="code", source=c) for c, _ in ran)]
    context = grounded_context(CompletionContext(prefix=cursor_prefix, suffix="", cells=cells, active=2), ran[1][1])
    prompt = build_prompt(context, fim=FIM_FORMATS[0], count_tokens=len, max_prompt_tokens=100_000)
    assert prompt.text + middle == fim


@pytest.mark.parametrize("seed", range(5))
def test_targets_are_cells_that_read_earlier_values(seed):
    ran = executed_corpus.run_notebook(NOTEBOOK)
    assert executed_corpus.targets(ran, random.Random(seed)) == [1]
