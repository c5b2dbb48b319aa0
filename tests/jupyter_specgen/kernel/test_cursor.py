"""Names at the cursor from a real ipykernel's live namespace, through KernelLinks as the server asks."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from jupyter_specgen.kernel_client import KernelLinks

pytestmark = pytest.mark.asyncio(loop_scope="module")

SETUP = """
import os, time, numpy as np, pandas as pd
sales = pd.DataFrame({"region": ["north", "south", "north"], "units": [3, 5, 2],
                      "unit_price": [1.5, 2.0, 3.25], 3: [0, 1, 0]})
arr = np.arange(6).reshape(2, 3)
inventory = {"apples": 3, "pears": 0}
def restock(store, amount=1, *, when=None):
    return store
class Watch:
    @property
    def boom(self):
        global touched
        touched = True
        try:
            open(MARK, "w").write("x")
        except OSError:
            pass
        return 41
def slow():
    time.sleep(30)
def slowish():
    time.sleep(0.5)
    return "text"
w = Watch()
"""

DIGEST = """
import hashlib, pickle
def _cursor_digest():
    keep = {k: v for k, v in get_ipython().user_ns.items() if k in ("sales", "arr", "inventory")}
    names = sorted(k for k in get_ipython().user_ns if not k.startswith("_"))
    return hashlib.sha256(pickle.dumps((names, [pickle.dumps(keep[k]) for k in sorted(keep)]))).hexdigest()
"""


@pytest.fixture(scope="module")
def mark(tmp_path_factory):
    return tmp_path_factory.mktemp("cursor") / "mark.txt"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def links(kernel, mark):
    await kernel.run(f"MARK = {str(mark)!r}\n" + SETUP + DIGEST)
    made = KernelLinks(kernel.mkm, connect_timeout_s=30)
    try:
        yield made
    finally:
        await made.close()


async def at(kernel, links, before, after="", **kw):
    kw.setdefault("budget_ms", 2000)  # generous: the tests pin behaviour, not speed
    reply = await links.cursor(kernel.kernel_id, before, after, **kw)
    assert reply is not None, before
    return reply


async def test_attributes_of_a_frame_public_first(kernel, links):
    """`sales.` lists the live frame's public attributes (methods and its columns); the private and
    dunder ones once `_` is typed, private before dunder."""
    reply = await at(kernel, links, "x = sales.")
    assert (reply.kind, reply.typed, reply.required) == ("attribute", "", True)
    assert {"groupby", "head", "units", "region"} <= set(reply.names)
    assert not [n for n in reply.names if n.startswith("_")]
    private = await at(kernel, links, "x = sales._")
    assert private.names and all(n.startswith("_") for n in private.names)
    first_dunder = next(i for i, n in enumerate(private.names) if n.startswith("__"))
    assert all(not n.startswith("__") for n in private.names[:first_dunder])
    assert all(n.startswith("__") for n in private.names[first_dunder:])
    assert "fork" not in reply.note  # a plain name of a pandas type is read in the kernel itself
    typed = await at(kernel, links, "sales.gr")
    assert typed.typed == "gr" and "groupby" in typed.names and all(n.startswith("gr") for n in typed.names)


async def test_attributes_of_an_array(kernel, links):
    """`arr.` lists the numpy array's attributes."""
    reply = await at(kernel, links, "arr.")
    assert reply.kind == "attribute" and {"reshape", "shape", "T", "sum"} <= set(reply.names)


async def test_a_call_is_evaluated_in_the_fork_and_leaves_the_kernel_as_it_was(kernel, links, mark):
    """`sales.groupby('region').` and a property that writes a global and a file: evaluated in a fork; the kernel is unchanged."""
    before = await kernel.eval("_cursor_digest()")
    grouped = await at(kernel, links, "sales.groupby('region').")
    assert grouped.kind == "attribute" and {"agg", "sum", "units"} <= set(grouped.names)
    assert "fork" in grouped.note
    prop = await at(kernel, links, "w.boom.")
    assert prop.kind == "attribute" and "bit_length" in prop.names  # the value 41 came back from the fork
    assert "fork" in prop.note
    assert await kernel.eval("'touched' in globals()") is False
    assert not mark.exists()
    assert await kernel.eval("_cursor_digest()") == before


async def test_column_labels_of_the_live_frame(kernel, links):
    """`sales[`, `sales['un` and `sales.loc[:, ` give the frame's labels as literals; a dict gives its keys.
    After a plain `[` of a frame with flat columns only `]` can follow a label, so the head ends with it;
    after `.loc[:, ` (a slice may follow), in a list of labels, and for a dict's keys it does not."""
    reply = await at(kernel, links, "sales[")
    assert reply.kind == "column" and reply.required
    assert {"'units']", '"units"]', "'region']", "'unit_price']", "3]"} <= set(reply.names)
    typed = await at(kernel, links, "total = sales['un")
    assert (typed.typed, sorted(typed.names)) == ("'un", ["'unit_price']", "'units']"])
    loc = await at(kernel, links, "sales.loc[:, ")
    assert {n + "]" for n in loc.names} == set(reply.names)
    listed = await at(kernel, links, "sales[['region', ")
    assert set(listed.names) == set(loc.names)
    keys = await at(kernel, links, "inventory['")
    assert keys.kind == "column" and sorted(keys.names) == ["'apples'", "'pears'"]


async def test_parameters_of_the_live_callable(kernel, links):
    """`pd.read_csv(` and a user function `restock(` give their parameters with '=', not required (a positional may come)."""
    reply = await at(kernel, links, "pd.read_csv(")
    assert (reply.kind, reply.required) == ("parameter", False)
    assert {"sep=", "header=", "usecols="} <= set(reply.names) and "sales" in reply.names
    user = await at(kernel, links, "restock(inventory, amount=2, ")
    assert user.kind == "parameter" and "when=" in user.names
    assert "amount=" not in user.names and "store=" not in user.names  # given by keyword, filled by position


async def test_a_frame_methods_label_arguments_take_its_labels(kernel, links):
    """Where a frame method takes column labels (`groupby(`'s `by`, `nlargest(2, `'s `columns`, a plot's `y=`,
    even through the `plot` accessor) the frame's labels are heads too; elsewhere (`kind=`, `ascending=`) not."""
    for before in ["sales.groupby(", "sales.nlargest(2, ", "sales.plot(x='region', y=", "sales.plot.bar(y=",
                   "sales.merge(sales, on="]:
        reply = await at(kernel, links, before)
        assert {"'units'", "'region'"} <= set(reply.names) and not reply.required, (before, reply)
        assert "sales" in reply.names  # any expression may still come: a variable, a list
    for before in ["sales.plot(kind=", "sales.sort_values(by='units', ascending=", "sales.nlargest("]:
        reply = await at(kernel, links, before)
        assert "'units'" not in reply.names, (before, reply)


async def test_names_at_the_start_of_an_expression(kernel, links):
    """After `=`: bound names, builtins and keywords, not IPython's hidden names; what is typed narrows them."""
    reply = await at(kernel, links, "total = ")
    assert (reply.kind, reply.required) == ("name", False)
    assert {"sales", "arr", "restock", "len", "True", "lambda"} <= set(reply.names)
    assert not {"In", "Out", "_ih", "_i1", "_oh"} & set(reply.names), {"In", "Out", "_ih", "_i1", "_oh"} & set(reply.names)
    typed = await at(kernel, links, "total = sa")
    assert typed.typed == "sa" and "sales" in typed.names and all(n.startswith("sa") for n in typed.names)
    local = await at(kernel, links, "def g(frame):\n    return frame.sum() + fr")
    assert "frame" in local.names  # a parameter of the function being written is not forbidden


async def test_nothing_inside_strings_comments_or_where_names_are_bound(kernel, links):
    """Inside a string or a comment, at `for `, and on a name rebound in the cell: no constraint."""
    for before in ("x = 'sales.", "# sales.", "y = 1  # see sales[", "for ", 's = """\nsales.',
                   "sales = sales.dropna()\nsales."):
        reply = await at(kernel, links, before)
        assert (reply.kind, reply.names) == ("", []), (before, reply)
        assert reply.note


async def test_half_typed_code_never_raises(kernel, links):
    """Garbage and half-typed code get an answer (most with no constraint), never an error."""
    garbage = ["))))((", "x = )", "\x00\x01", "if x:\n    pass\n  y.", "sales.groupby(", "sales[sales.",
               "é.", "lambda: .", "[" * 200, "f(" * 100 + "sales.", "'''", "@@@.", "0x.", "sales.loc[[",
               "nope.", "nope().", "sales.groupby('region')['units'].", "1/0 .", "sales.__class__.mro()."]
    for before in garbage:
        assert await at(kernel, links, before, budget_ms=500) is not None
    errors = await at(kernel, links, "(1/0).")  # raised in the fork: said, not sent as an error
    assert errors.kind == "" and "ZeroDivisionError" in errors.note


async def test_a_slow_evaluation_is_cut_at_the_budget(kernel, links):
    """`slow().` (sleeps 30 s) is killed at the budget's deadline and answered without names."""
    link = await links.link(kernel.kernel_id)
    reply = await link.cursor("slow().", budget_ms=150, timeout_s=10)
    assert reply is not None and reply.kind == "" and "deadline" in reply.note
    assert await kernel.eval("1 + 1") == 2  # the kernel was never blocked by it


async def test_a_busy_kernel_answers_without_forking(kernel, links):
    """While a cell runs: `sales.` is answered on the subshell; an expression with a call is not evaluated."""
    link = await links.link(kernel.kernel_id)
    running = asyncio.ensure_future(kernel.run("time.sleep(3)"))
    for _ in range(100):
        if link.busy:
            break
        await asyncio.sleep(0.02)
    assert link.busy and link.subshell_id
    direct = await link.cursor("sales.", budget_ms=500)
    assert direct is not None and "groupby" in direct.names
    call = await link.cursor("sales.groupby('region').", budget_ms=500)
    assert call is not None and call.kind == "" and "running a cell" in call.note
    assert not running.done()
    await running


async def test_heads_are_kept_until_a_cell_runs(kernel, links):
    """A fork late for its request finishes into the cache: later keystrokes get its names without forking; a cell run clears them."""
    link = await links.link(kernel.kernel_id)
    late = await link.cursor("slowish().", budget_ms=50, timeout_s=10)  # the fork sleeps 0.5 s
    assert late is not None and late.kind == "" and "deadline" in late.note
    meanwhile = await link.cursor("slowish().u", budget_ms=50, timeout_s=10)
    assert meanwhile is not None and "still evaluating" in meanwhile.note  # no second fork
    for _ in range(100):
        reply = await link.cursor("slowish().up", budget_ms=50, timeout_s=10)
        if reply is not None and reply.names:
            break
        await asyncio.sleep(0.1)
    assert (reply.names, reply.typed) == (["upper"], "up")
    await kernel.run("ran_a_cell = 1")
    cleared = await link.cursor("slowish().up", budget_ms=50, timeout_s=10)
    assert cleared is not None and cleared.kind == "" and "deadline" in cleared.note


async def test_a_loop_variable_has_the_names_of_its_first_value(kernel, links):
    """``s`` of ``[s. for s in sizes]`` and ``rows`` of ``for name, rows in frame.groupby(...)``
    are bound by the cell, so the kernel has no value for them; their first value (the first
    element, taken apart as the target takes it) is evaluated in a fork and its names listed."""
    await kernel.run(
        "class Size:\n    def __init__(self, w, h):\n        self.width_px, self.height_px = w, h\n"
        "sizes = [Size(300, 250), Size(160, 600)]\n"
        "def countdown():\n    yield Size(1, 2)\n    yield 'second'\n"
        "ticks = countdown()\n"
    )
    before = await at(kernel, links, "widths = [s.", " for s in sizes]")
    assert (before.kind, sorted(before.names), before.required) == ("attribute", ["height_px", "width_px"], True)
    after = await at(kernel, links, "wide = [s for s in sizes if s.width_px > s.")
    assert sorted(after.names) == ["height_px", "width_px"]
    block = await at(kernel, links, "for name, rows in sales.groupby('region'):\n    print(name, rows[", "].min())")
    assert block.kind == "column" and "'units']" in block.names, block
    outside = await at(kernel, links, "for s in sizes:\n    pass\nx = s.")
    assert outside.names == [], outside  # after the loop its value is the last one, not known
    # Iterating runs user code (a generator): in the fork only; the kernel's generator is where it was.
    first = await at(kernel, links, "x = [t.", " for t in ticks]")
    assert "width_px" in first.names, first
    assert await kernel.eval("next(ticks).width_px") == 1
