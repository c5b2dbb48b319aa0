"""The rungs of a candidate: cut back to where it parses, brackets closed, nothing invented."""

from __future__ import annotations

import random

import pytest

from jupyter_specgen.completions.ladder import MAX_RUNGS, called_head, ladder, parse_error


def texts(prefix, candidate, suffix=""):
    return [r.text for r in ladder(prefix, candidate, suffix).rungs]


def test_a_right_column_before_junk_is_kept_and_closed():
    assert "'area_km2']" in texts("mean = weather[", "'area_km2', 'S', 'B', (2, 2, 2")
    assert texts("x = readings[", "'sensor_2'     #  0x041: 0.5d, 0, 2], [0, 2")[0] == "'sensor_2']"


def test_a_call_is_cut_back_to_its_empty_call_and_to_its_first_arguments():
    rungs = texts("u = shop.groupby('region')['units'].", "sum(0x9, 0.0.0.0")
    assert "sum()" in rungs and "sum" not in rungs  # the call, never the uncalled method
    assert all(not r.startswith("sum(0x9, 0.0.0") for r in rungs)


def test_mid_line_the_user_closers_after_the_cursor_are_respected():
    assert texts("wet = weather[weather[", "'rain_mm', 'x'", "] > 10]") == ["'rain_mm'"]
    # ``b[`` is the user's and the ``)`` after the cursor does not close it: the rung does
    assert texts("r = a.corr(b[", "'s1'], 0.5, [", ")")[0] == "'s1']"


def test_never_cut_after_an_operator_a_comma_or_a_keyword_that_wants_more():
    for rung in texts("total = ", "price * units + tax and not ("):
        assert not rung.rstrip(")]} ").endswith(("*", "+", ",", "and", "not"))


def test_an_open_block_of_the_user_is_a_fair_unfinished_rung():
    rungs = texts("for row in sales.itertuples(", "index=False, 0.0.0")
    assert "index=False" in rungs  # ``for ... (index=False)`` is unfinished, as the user left it


def test_the_whole_candidates_error_is_known_without_running_it():
    steps = ladder("x = df.", "sum(0x9, 0.0.0.0 +")
    assert steps.rungs and steps.whole_error


def test_ipython_syntax_at_the_cursor_gives_no_rungs_only_the_kernel_can_tell():
    assert ladder("%timeit x = df.", "sum(1, 2") == ladder("%timeit x = df.", "sum(1, 2", "")
    assert ladder("%timeit x = df.", "sum(1, 2").rungs == []
    assert ladder("x = df.", "sum(1, 2", "\n%time y = 1").rungs == []
    # a magic in a statement of its own is not read: the kernel runs the cell as IPython does
    assert "sum(1)" in texts("!ls\ny = df.", "sum(1, 2")


def test_a_long_cell_is_read_from_the_statement_at_the_cursor():
    setup = "import numpy as np\n" + "".join(f"x{i} = np.arange({i})\n" for i in range(300))
    for prefix, suffix in [("if x1:\n    pass\nelse:\n    y = x1.", "\nz = 1"),
                           ("data = [\n    1,\n]\ny = x1.", ""),
                           ('doc = """\nnot code: (\n"""\ny = x1.', "")]:
        assert texts(setup + prefix, "mean(axis=0, 0.0.0", suffix) == texts(prefix, "mean(axis=0, 0.0.0", suffix)


@pytest.mark.parametrize("seed", range(40))
def test_every_rung_parses_in_its_cell_and_is_a_cut_of_the_candidate(seed):
    """Random junk after random cell heads: each rung is a prefix of the candidate plus closers
    only, parses (or is unfinished) in the cell, and there are at most MAX_RUNGS."""
    rng = random.Random(seed)
    heads = ["x = df[", "y = f(a, ", "for r in rows:\n    print(", "z = obj.", "w = [d[", "", "q = {'a': "]
    pieces = ["'col'", "0.0.", "]", ")", ", ", "sum(", "x", " + ", "[", "#", "\n", "'", "0x9", ".mean()", "(1, 2"]
    prefix = rng.choice(heads)
    candidate = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
    rungs = ladder(prefix, candidate, "").rungs
    assert len(rungs) <= MAX_RUNGS
    for rung in rungs:
        kept = candidate[: rung.cut].rstrip(" \t")
        assert rung.text.startswith(kept) and set(rung.text[len(kept):]) <= set(")]}")
        assert rung.text.strip() != candidate.strip()
        assert parse_error(prefix + rung.text) == ""
    assert [r.cut for r in rungs] == sorted(r.cut for r in rungs)


def test_parse_error_tells_an_unfinished_statement_from_a_broken_one():
    assert parse_error("for x in y:") == ""
    assert parse_error("x = (1,") == ""
    assert parse_error("x = 0.0.0") != ""
    assert parse_error("x = (1,]") != ""


@pytest.mark.parametrize(
    "prefix,candidate,suffix,expected",
    [
        ("due = inv.", "gross_total", "", "gross_total()"),  # a method's name alone is no value
        ("revenue = sum(i.", "net_total, _g=True)", " for i in book)", "net_total()"),  # the user's ) is after
        ("x = (a.", "b", "", "b())"),  # the user's open bracket is closed as a rung's is
        ("x = df.", "sum()", "", None),  # it calls it already
        ("x = df.", "sum (1)", "", None),
        ("x = ", "abs", "", None),  # not after a dot
        ("x = a.", "0.5", "", None),
    ],
)
def test_after_a_dot_the_attribute_is_also_tried_called(prefix, candidate, suffix, expected):
    assert called_head(prefix, candidate, suffix) == expected
