"""What counts as a suggestion before anything runs: a candidate must add code (a pure function of
``completions.validation``; what runs is the kernel's to say)."""

import pytest

from jupyter_specgen.completions.validation import adds_code, chains_an_assignment


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


@pytest.mark.parametrize(("prefix", "candidate", "chained"), [
    ("due = inv.", "vat_rate = [0, 2, 2, 2]", True),  # would overwrite the attribute being read
    ("rate = inv.", 'vat_rate = "c", "B"', True),
    ("x = 1; y = ", "z = 2", True),
    ("t = (a ==", "b) = 3", True),
    ("due = inv.", "gross_total()", False),
    ("a = 1\nb = f(", "k=1)", False),  # a keyword argument is inside brackets
    ("a = ", "lambda x=1: x", False),  # so is a lambda's default
    ("df.", "columns = ['a', 'b']", False),  # the statement's first assignment
    ("a = b\n", "c = 2", False),  # a new statement
    ("total = sales[", "'units'].sum()\nz = 3", False),
    ("n = len(", "xs)  # = count", False),
])
def test_a_candidate_does_not_chain_a_second_assignment_onto_the_line(prefix, candidate, chained):
    """A statement that already assigns before the cursor gets no second top-level ``=`` from a completion."""
    assert bool(chains_an_assignment(prefix, candidate)) is chained
