"""The first value of a loop variable around the cursor, as an expression (kernel/loop_values.py)."""

from __future__ import annotations

import pytest

from jupyter_specgen.kernel.loop_values import first_value


@pytest.mark.parametrize(
    "before,after,name,expected",
    [
        ("widths = [s.", " for s in sizes]", "s", "next(iter(sizes))"),  # the element before its for
        ("revenue = sum(i.", " for i in book)", "i", "next(iter(book))"),
        ("wide = [s for s in sizes if s.width_px > s.", "", "s", "next(iter(sizes))"),
        ("for name, rows in weather.groupby('station'):\n    print(name, rows[", "].min())", "rows",
         "next(iter(weather.groupby('station')))[1]"),
        ("for i, (a, b) in enumerate(pairs):\n    x = b.", "", "b", "next(iter(enumerate(pairs)))[1][1]"),
        ("d = {k: v.", " for k, v in table.items()}", "v", "next(iter(table.items()))[1]"),
        ("for x in xs: print(x.", "", "x", "next(iter(xs))"),
        ("total = [[c.", " for c in row] for row in grid]", "row", "next(iter(grid))"),  # nested: the outer
        ("for r in rows:\n    for c in r.cells:\n        c.", "", "c", "next(iter(r.cells))"),
        ("def f():\n    for r in rows:\n        r.", "", "r", "next(iter(rows))"),
    ],
)
def test_the_for_around_the_cursor_gives_the_first_value(before, after, name, expected):
    assert first_value(before, after, name) == expected


@pytest.mark.parametrize(
    "before,after,name",
    [
        ("for x in xs:\n    pass\ny = x.", "", "x"),  # after the loop: the last value, not known
        ("[x for x in x.", "]", "x"),  # its own iterable reads the x outside
        ("for *a, b in rows:\n    a.", "", "a"),  # a starred target is a list of the rest
        ("x = [s.", "", "s"),  # no for at all
        ("y = [t for t in ts]\nz = t.", "", "t"),  # the comprehension's bracket is closed
        ("for x in", "", "x"),  # half a header
        ("for x in xs:\n    x = x + 1\n    x.", "", "x"),  # rebound in the block: not the first element
        ("for x in xs: x = f(x); x.", "", "x"),
    ],
)
def test_no_first_value_outside_the_loops_scope(before, after, name):
    assert first_value(before, after, name) is None


def test_fragments_never_raise():
    import random

    rng = random.Random(5)
    pieces = ["for", " x", " in", " xs", ":", "\n", "    ", "[", "]", "(", ")", "x.", ",", " if", "'", "#"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        cut = rng.randint(0, len(text))
        first_value(text[:cut], text[cut:], "x")  # None or a string, never an exception
