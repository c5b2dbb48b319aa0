"""Verdicts that say what was exercised: unfinished statements, function and method bodies (real ipykernel)."""

from __future__ import annotations

import pytest
import pytest_asyncio

from jupyter_specgen.kernel import exercise
from jupyter_specgen.kernel.validate import ValidateOptions, validate
from jupyter_specgen.kernel_client import KernelLinks

SETUP = """
import pandas as pd
sales = pd.DataFrame({"region": ["north", "south", "north"], "units": [3, 5, 2]})
class Scaler:
    def __init__(self, k):
        self.k = k
    def apply(self, df):
        return df.units * self.k
scaler = Scaler(2)
"""

NOTEBOOK = [SETUP, "big = clean(sales)\nbig.head()", "scaler.apply(sales)", "undefined_thing(1)"]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def links(kernel):
    await kernel.run(SETUP)
    made = KernelLinks(kernel.mkm, connect_timeout_s=30)
    try:
        yield made
    finally:
        await made.close()


async def verdicts(kernel, links, prefix, candidates, suffix="", notebook=NOTEBOOK):
    return await links.validate(kernel.kernel_id, candidates, prefix=prefix, suffix=suffix, timeout_ms=5000,
                                notebook=notebook)


@pytest.mark.asyncio(loop_scope="module")
async def test_unfinished_statements(kernel, links):
    """An unfinished `for` header is incomplete (its names checked); an undefined name in it raised; real SyntaxErrors raised."""
    ok, undefined, half, junk = await verdicts(
        kernel, links, "for row in ", ["sales.itertuples():", "undefined_name:", "sales.itertuples(", "0.0.0.0:"])
    assert (ok.status, ok.error_type) == ("incomplete", "")
    assert half.status == "incomplete"  # ``for row in sales.itertuples(`` closed to run it
    assert (undefined.status, undefined.error_type, undefined.line) == ("raised", "NameError", 1)
    assert (junk.status, junk.error_type) == ("raised", "SyntaxError")
    (paren,) = await verdicts(kernel, links, "total = (sales['units'] *\n", ["  sales['units'].max()"])
    assert paren.status == "incomplete"
    (broken,) = await verdicts(kernel, links, "total = ", ["sales[[']] +"])
    assert (broken.status, broken.error_type) == ("raised", "SyntaxError")


@pytest.mark.asyncio(loop_scope="module")
async def test_function_bodies_are_called_as_the_notebook_calls_them(kernel, links):
    """A body with a NameError and a call `clean(sales)` elsewhere is raised at its line; a correct one ran; no call: defined."""
    prefix = "def clean(df):\n    kept = df[df.units > 2]\n    return "
    good, bad = await verdicts(kernel, links, prefix, ["kept.sort_values('units')", "s.sort_values('units')"])
    assert (good.status, good.message) == ("ran", "exercised: clean(sales)")
    assert (bad.status, bad.error_type, bad.line) == ("raised", "NameError", 3)
    assert "calling clean(sales)" in bad.message
    (alone,) = await verdicts(kernel, links, prefix, ["s.sort_values('units')"], notebook=[SETUP])
    assert (alone.status, alone.message) == ("defined", "defined, not exercised")
    assert await kernel.eval("'big' in globals() or 'kept' in globals()") is False


@pytest.mark.asyncio(loop_scope="module")
async def test_method_bodies_are_called_on_the_notebooks_instances(kernel, links):
    """`scaler.apply(sales)` in the notebook exercises a new body of Scaler.apply on the live instance."""
    prefix = ("class Scaler:\n    def __init__(self, k):\n        self.k = k\n"
              "    def apply(self, df):\n        return ")
    good, bad = await verdicts(kernel, links, prefix, ["df.units * self.k", "df.units * self.factor"])
    assert good.status == "ran" and "scaler.apply(sales)" in good.message
    assert (bad.status, bad.error_type, bad.line) == ("raised", "AttributeError", 5)


def test_closing_unfinished_cells():
    """What an unfinished cell left open is closed, indented under its header; a cell closed by the cell's own call is run once."""
    assert exercise.close("for r in rows:") == "for r in rows:\n    break"
    assert exercise.close("if a:\n    for r in f(x,") == "if a:\n    for r in f(x,):\n        break"
    assert exercise.close("try:\n    x = [1,") == "try:\n    x = [1,]\nfinally:\n    pass"
    assert exercise.close("s = '''abc") == "s = '''abc'''"
    assert exercise.close("x = (1,  # note") == "x = (1,  # note\n)"
    assert exercise.unfinished("for r in rows:") and not exercise.unfinished("x = )")
    (v,) = validate({}, ["return x * 2\nprint(double(4))"], prefix="def double(x):\n    ",
                    options=ValidateOptions(timeout_s=5, cursor=len("def double(x):\n    "),
                                            notebook=("double(undefined)",)))
    assert (v.status, v.stdout) == ("ran", "8\n")  # the cell's own call exercised it; the notebook's is not made
