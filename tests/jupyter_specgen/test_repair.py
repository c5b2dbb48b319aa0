"""Closing what a candidate leaves open at the end of the line (completions/repair.py)."""

from __future__ import annotations

import pytest

from jupyter_specgen.completions.repair import close_brackets


@pytest.mark.parametrize(
    "prefix,candidate,suffix,expected",
    [
        ("x = weather[", "'temp_c'", "", "'temp_c']"),  # the head alone: closed
        ("sales.groupby(", "'region'", "", "'region')"),
        ("f(a, ", "b", "", "b)"),
        ("x = [1, 2", ", 3", "\n", ", 3]"),
        ("y = f(", "x", "\nz = 1", "x)"),  # the next line does not close it
        ("for x in range(", "3", "", "3)"),  # then the header lacks only its colon: incomplete, not wrong
        ("x = {'a': ", "[1, 2]", "", "[1, 2]}"),
    ],
)
def test_brackets_open_at_the_end_of_the_line_are_closed(prefix, candidate, suffix, expected):
    """A candidate that ends on a complete operand gets the closers of every bracket still open."""
    assert close_brackets(prefix, candidate, suffix) == expected


@pytest.mark.parametrize(
    "prefix,candidate,suffix",
    [
        ("sales.groupby(", "'region'", ")"),  # the text after the cursor closes it
        ("y = f(", "x", "\n, 2)"),  # a later line closes it
        ("f(a, ", "b,", ""),  # ends on a comma: more is coming
        ("x = (", "a +", ""),  # ends on an operator
        ("x = f(", "a if", ""),  # ends on a keyword that wants an operand
        ("df.groupby(", "'r')['units'].sum(", ""),  # ends on an opening bracket
        ('s = "abc', "def", ""),  # inside an unterminated string
        ("x = d[", "'a", ""),
        ("x = ", "1", ""),  # nothing open
        ("x = f(", "1\n", ""),  # the candidate ended the line itself
        ("x = f(", ")]", ""),  # a closer that matches nothing: not ours to fix
    ],
)
def test_nothing_is_guessed(prefix, candidate, suffix):
    """Unfinished expressions, strings, and text the suffix closes are left as they are."""
    assert close_brackets(prefix, candidate, suffix) == candidate
