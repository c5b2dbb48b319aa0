"""The publish rule (``evaluate.not_worse``): what a held-out comparison of twenty cells lets into service."""

from __future__ import annotations

import pytest

from specgen_backend.training.evaluate import Metrics, not_worse

N = 20  # held-out cells, the size a personalize job evaluates on


def _m(exact: int, similarity: float, ran: int | None = None, n: int = N) -> Metrics:
    """Metrics of ``n`` cells: ``exact`` exact matches, ``ran`` completions that ran (None: not judged)."""
    return Metrics(exact_match=exact / n, edit_similarity=similarity, count=n,
                   executable_rate=None if ran is None else ran / n)


def test_a_tie_publishes():
    assert not_worse(_m(4, 0.68, 3), _m(4, 0.68, 3))


def test_any_drop_in_edit_similarity_is_refused():
    """The one continuous measure may not drop at all, whatever the rates gain."""
    assert not not_worse(_m(10, 0.679, 10), _m(4, 0.68, 3))


@pytest.mark.parametrize("lost", [1, 2, 3, 4])
def test_a_few_cells_lost_with_closer_completions_publish(lost):
    """One to four exact matches (or runs) lost out of twenty is what chance does (p >= 0.0625)."""
    assert not_worse(_m(8 - lost, 0.73, 10), _m(8, 0.68, 10))
    assert not_worse(_m(8, 0.73, 10 - lost), _m(8, 0.68, 10))


@pytest.mark.parametrize("lost", [5, 8, 20])
def test_five_or_more_cells_lost_are_refused_however_close_the_rest(lost):
    """All lost and none gained, five cells has p = 0.031: a regression, not noise."""
    assert not not_worse(_m(20 - lost, 0.95, 20), _m(20, 0.68, 20))
    assert not not_worse(_m(20, 0.95, 20 - lost), _m(20, 0.68, 20))


def test_the_executable_rate_counts_only_when_both_sides_were_judged():
    assert not_worse(_m(8, 0.70, None), _m(8, 0.68, 20))
    assert not_worse(_m(8, 0.70, 0), _m(8, 0.68, None))
    assert not not_worse(_m(8, 0.70, 0), _m(8, 0.68, 20))
