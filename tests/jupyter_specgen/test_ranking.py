"""Ranking: only what holds up is shown; ran > incomplete > defined > not_validated; meaningful
results, then likelihood, then shorter, then what the user accepted before."""

import pytest

from jupyter_specgen.kernel.messages import Spec, Verdict
from jupyter_specgen.ranking import judge, normalise, rank, summary


def ran(i, value=None, refused=(), assigned=(), stdout=""):
    return Verdict(index=i, status="ran", value=value, refused=list(refused), assigned=list(assigned), stdout=stdout)


FULL = Spec(name="<value>", type="pandas.DataFrame", kind="dataframe", shape=[5, 3])
EMPTY = Spec(name="<value>", type="pandas.DataFrame", kind="dataframe", shape=[0, 3])


def test_failures_are_never_ranked_and_the_runner_comes_first():
    """Of candidates where some raise, time out or crash, only those that ran are returned."""
    texts = ["df['nope']", "df.price.mean()", "df.prize", "loop()", "boom()"]
    verdicts = [Verdict(index=0, status="raised", error_type="KeyError", message="'nope'", line=1),
                ran(1, Spec(name="<value>", type="float", kind="scalar", examples="2.2")),
                Verdict(index=2, status="raised", error_type="AttributeError", message="prize"),
                Verdict(index=3, status="timeout"), Verdict(index=4, status="crashed", message="died of SIGXCPU")]
    ranked = rank(texts, verdicts, [-0.1, -5.0, -0.2, 0.0, 0.0])
    assert [r.index for r in ranked] == [1]
    assert ranked[0].item_verdict == "ran"


def test_verdict_tiers_order_ran_incomplete_defined_not_validated():
    """ran > incomplete > defined > not_validated, whatever the likelihoods say."""
    texts = ["a", "b", "c", "d"]
    verdicts = [None, Verdict(index=1, status="defined", message="defined, not exercised"),
                Verdict(index=2, status="incomplete", message="unfinished statement"), ran(3)]
    ranked = rank(texts, verdicts, [0.0, -1.0, -2.0, -9.0])
    assert [r.item_verdict for r in ranked] == ["ran", "incomplete", "defined", "not_validated"]
    assert ranked[2].detail == "defined, not exercised"


def test_meaningful_results_beat_empty_ones_and_logprob_breaks_ties():
    """Among clean runs, a non-empty value, assignment or output beats None/empty; equal ones go by logprob."""
    texts = ["a", "b", "c", "d", "e"]
    assigned = [Spec(name="t", type="int", kind="scalar", examples="3")]
    verdicts = [ran(0, EMPTY), ran(1, FULL), ran(2, None), ran(3, assigned=assigned), ran(4, stdout="hi\n")]
    assert [r.index for r in rank(texts, verdicts, [0.0, -2.0, 0.0, -1.0, -3.0])] == [3, 1, 4, 0, 2]


def test_a_run_that_needed_a_refusal_ranks_below_a_clean_one():
    """A run that only got through because a guard refused something ranks below a clean run."""
    ranked = rank(["sneaky", "clean"], [ran(0, FULL, refused=["os.system 'ls'"]), ran(1)], [0.0, -9.0])
    assert [r.index for r in ranked] == [1, 0]
    assert ranked[1].detail == "refused: os.system 'ls'"


def test_ties_go_to_the_shorter_then_to_what_was_accepted_before():
    """Equal verdict and likelihood: shorter wins; equal length: the text accepted before in this notebook wins."""
    texts = ["sales.units", "sales.price", "sales.units.sum()"]
    verdicts = [ran(0, FULL), ran(1, FULL), ran(2, FULL)]
    assert [r.index for r in rank(texts, verdicts, [-1.0, -1.0, -1.0])] == [0, 1, 2]
    assert [r.index for r in rank(texts, verdicts, [-1.0, -1.0, -1.0], accepted=["sales.price"])] == [1, 0, 2]
    asked = []
    rank(texts, verdicts, [-1.0, -2.0, -3.0], accepted=lambda: asked.append(1) or [])
    assert not asked, "the accepted texts are only read when a tie needs them"


def test_duplicates_after_normalising_whitespace_keep_their_best_copy():
    """Texts equal up to whitespace between tokens appear once, as their best-ranked copy; mismatched inputs are refused."""
    ranked = rank(["x +  1\n", "x + 1", " x +\t1", "y"], [None, ran(1), None, None], [0.0, -1.0, 0.5, -2.0])
    assert [r.index for r in ranked] == [1, 3]
    assert normalise("f( x ,y )\n\n") == normalise("f(x, y)") != normalise("f(x, 'y ')")
    assert normalise("if a:\n    b\nc") != normalise("if a:\n    b\n    c"), "block structure is kept"
    assert normalise("x = 1  # one") == normalise("x = 1"), "a comment is not code"
    # Where the tokenizer stops (an unterminated string), the rest still tells two texts apart.
    assert normalise("s = '''abc") != normalise("s = '''def") and normalise("f(1, '") != normalise('f(1, "')
    with pytest.raises(ValueError, match="one verdict and one logprob per text"):
        rank(["x"], [], [0.0])


def test_judge_and_summary_say_why_in_words():
    """Rejections carry a reason; the summary groups them, most frequent first."""
    name_error = Verdict(index=0, status="raised", error_type="NameError", message="name 's' is not defined")
    assert judge(name_error).shown is False
    assert judge(None) == judge(None).__class__(True, "not_validated", "not validated")
    reason = judge(name_error).detail
    assert summary([reason] * 3) == "no suggestion: 3 candidates raised NameError: name 's' is not defined"
    timeout = judge(Verdict(index=1, status="timeout")).detail
    assert summary([timeout, reason, reason]) == \
        "no suggestion: 2 candidates raised NameError: name 's' is not defined; 1 candidate timed out"
    assert judge(Verdict(index=0, status="crashed", message="died of SIGXCPU")).detail == "crashed (died of SIGXCPU)"
