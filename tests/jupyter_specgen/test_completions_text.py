"""What counts as a suggestion before anything runs: a candidate must add code, and an unfinished
statement is told apart from a wrong one (pure functions of ``completions.validation``)."""

import pytest

from jupyter_specgen.completions.validation import adds_code, unfinished


@pytest.mark.parametrize(("prefix", "candidate", "why"), [
    ("x = ", "1", ""),
    ("x = sal", "es", ""),  # finishes a name the prefix began
    ("df.groupby(", "'a')", ""),
    ("s = 'ab", "c'", ""),
    ("x = 1  # n", "ote\ny = 2", ""),  # ends the comment, then code
    ("x = 1\n", "# total of the units", "was only a comment"),
    ("# compute", " the mean", "was only a comment"),  # continues the prefix's comment
    ("for i in range(3):\n", "    # each\n", "was only a comment"),
    ("", "   \n\t", "was empty"),
    ("x = 1\n", "\n\n", "was empty"),
])
def test_a_candidate_must_add_code(prefix, candidate, why):
    """Empty, whitespace-only and comment-only candidates add no code and say which."""
    assert adds_code(prefix, candidate) == why


def test_unfinished_statements_are_not_errors():
    """An open block or bracket is unfinished (more lines would close it); a stray closer is an error."""
    assert unfinished("for row in rows:\n") and unfinished("total = (1,\n")
    assert not unfinished("x = 1)") and not unfinished("x = 1") and not unfinished("def f(:\n")
