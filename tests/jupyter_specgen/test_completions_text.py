"""What counts as a suggestion before anything runs: a candidate must add code (a pure function of
``completions.validation``; what runs is the kernel's to say)."""

import pytest

from jupyter_specgen.completions.validation import adds_code


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
