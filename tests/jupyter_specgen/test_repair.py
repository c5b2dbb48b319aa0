"""Closing what a candidate leaves open at the end of the line (completions/repair.py)."""

from __future__ import annotations

import pytest

from jupyter_specgen.completions.repair import close_brackets, no_space_after_opener, opened_and_left_open, trim_tail


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


def test_a_trailing_comment_stays_after_the_closers_and_a_junk_one_goes():
    """Closers go before the comment the candidate ends in; a comment of only '#' and spaces is dropped."""
    assert close_brackets("x = df[", "'year'  # the year", "") == "'year']  # the year"
    assert close_brackets("x = df[", "'year'     #  #  #  ", "") == "'year']"
    assert close_brackets("x = f(", "__ge__#", "") == "__ge__)"


def test_a_candidate_cut_by_the_token_limit_is_not_repaired():
    """Only what the model ended itself is closed: a cut candidate may stop anywhere in an expression."""
    assert close_brackets("x = ", "[0, 3, 2, 4", "", ended_by_model=False) == "[0, 3, 2, 4"
    assert close_brackets("x = ", "[0, 3, 2, 4", "") == "[0, 3, 2, 4]"


@pytest.mark.parametrize(
    "prefix,candidate,expected",
    [
        ("x = ", "[0, 3, 2, 4", True),  # the candidate's own bracket, left open
        ("x = f(", "g(1", True),
        ("x = f(", "a, ", False),  # the user's bracket: a fair unfinished suggestion
        ("for x in ", "range(3):\n", False),  # a block header
        ("x = f(", "g(1)", False),
        ("x = ", "1", False),
        ("by = df.groupby(", "'a').sum()", False),  # closes the user's bracket, opens and closes its own
        ("by = df.groupby(", "'a').sum(", True),
        ("x = f(a[", "1], g(2", True),
    ],
)
def test_opened_and_left_open_tells_the_candidates_bracket_from_the_users(prefix, candidate, expected):
    """An unfinished cell counts against the candidate only when it opened what is left open."""
    assert opened_and_left_open(prefix, candidate) is expected


def test_a_tail_of_comments_is_trimmed_only_when_text_follows_the_cursor():
    """Before the `]` of `loc['shop', ` a trailing `\n    #` would comment the closer out; at the end of
    a line the candidate is left as the model wrote it."""
    assert trim_tail("'apr'\n    #", "]") == "'apr'"
    assert trim_tail("'apr'  # april\n", "]") == "'apr'"
    assert trim_tail("'a#b'", "]") == "'a#b'"  # a hash inside a string is no comment
    assert trim_tail("x,\n    y", ")") == "x,\n    y"
    assert trim_tail("'apr'\n    #", "") == "'apr'\n    #"


@pytest.mark.parametrize(
    "prefix,candidate,expected",
    [
        ("left = stock[", " 'SKU-031'", "'SKU-031'"),  # PEP 8: no space inside the bracket
        ("f(a, ", " b)", " b)"),  # after a comma the space is right
        ("x = [", "  \n    1,", "  \n    1,"),  # laid out over lines: left as written
        ("f(", " # the count", " # the count"),
        ("f(", "   ", "   "),
        ("x = ", " 1", " 1"),
    ],
)
def test_spaces_right_after_an_opening_bracket_go(prefix, candidate, expected):
    assert no_space_after_opener(prefix, candidate) == expected
