"""Ranking: runs cleanly > matches expectations > model likelihood."""

import pytest

from jupyter_specgen.kernel.messages import Spec, Verdict
from jupyter_specgen.ranking import item_verdict, rank


def ran(i, value=None, refused=()):
    return Verdict(index=i, status="ran", value=value, refused=list(refused))


def test_the_candidate_that_runs_comes_first_whatever_its_likelihood():
    """Of candidates where some raise and one runs, the one that runs is offered first."""
    texts = ["df['nope']", "df.price.mean()", "df.prize"]
    verdicts = [Verdict(index=0, status="raised", error_type="KeyError", message="'nope'", line=1),
                ran(1, Spec(name="<value>", type="float", kind="scalar", examples="2.2")),
                Verdict(index=2, status="raised", error_type="AttributeError", message="prize")]
    ranked = rank(texts, verdicts, [-0.1, -5.0, -0.2])
    assert [r.index for r in ranked] == [1, 0, 2]
    assert ranked[0].item_verdict == "ran"
    assert ranked[1].detail == "KeyError: 'nope' (line 1)"


def test_non_empty_results_beat_empty_ones_and_logprob_breaks_ties():
    """Among clean runs, a non-empty value beats None/empty frames; equal ones go by logprob."""
    empty = Spec(name="<value>", type="pandas.DataFrame", kind="dataframe", shape=[0, 3])
    full = Spec(name="<value>", type="pandas.DataFrame", kind="dataframe", shape=[5, 3])
    texts = ["a", "b", "c", "d"]
    verdicts = [ran(0, empty), ran(1, full), ran(2, None), ran(3, full)]
    assert [r.index for r in rank(texts, verdicts, [0.0, -2.0, 0.0, -1.0])] == [3, 1, 0, 2]


def test_unvalidated_sit_between_clean_and_failing_and_refusals_demote():
    """not_validated ranks below a clean run and above a failure; a run that caught a refusal ranks below a clean one."""
    texts = ["fail", "unknown", "sneaky", "clean"]
    verdicts = [Verdict(index=0, status="timeout"), None, ran(2, refused=["os.system 'ls'"]), ran(3)]
    ranked = rank(texts, verdicts, [0.0, 0.0, 0.0, -9.0])
    assert [r.index for r in ranked] == [3, 2, 1, 0]
    assert ranked[3].item_verdict == "raised" and ranked[2].item_verdict == "not_validated"


def test_duplicates_keep_their_best_copy_and_lengths_must_match():
    """Identical texts (up to trailing whitespace) appear once; mismatched inputs are refused."""
    ranked = rank(["x\n", "x", "y"], [None, ran(1), None], [0.0, -1.0, -2.0])
    assert [r.index for r in ranked] == [1, 2]
    with pytest.raises(ValueError, match="one verdict and one logprob per text"):
        rank(["x"], [], [0.0])


def test_item_verdict_maps_statuses_to_the_browser_three():
    """Verdicts map onto the browser's ran/raised/not_validated with a one-line detail."""
    assert item_verdict(None) == ("not_validated", "")
    assert item_verdict(Verdict(index=0, status="crashed", message="died of SIGXCPU")) == \
        ("raised", "crashed: died of SIGXCPU")
