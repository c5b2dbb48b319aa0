"""Where the cursor is, read from the text alone (no kernel): robust on half-typed code."""

from __future__ import annotations

import random

import pytest

from jupyter_specgen.kernel import cursor


@pytest.mark.parametrize("before, kind, expr, typed", [
    ("sales.", "attribute", "sales", ""),
    ("x = sales.gr", "attribute", "sales", "gr"),
    ("sales.groupby('region')['units'].", "attribute", "sales.groupby('region')['units']", ""),
    ("(a +\n b).", "attribute", "(a +\n b)", ""),
    ("sales[", "column", "sales", ""),
    ("sales['un", "column", "sales", "'un"),
    ("sales[['region', ", "column", "sales", ""),
    ("sales.loc[:, ", "column", "sales", ""),
    ("pd.read_csv(", "parameter", "pd.read_csv", ""),
    ("f(a, ax", "parameter", "f", "ax"),
    ("total = ", "name", "", ""),
    ("for x in ", "name", "", ""),
    ("if ok: y = sa", "name", "", "sa"),
    ("sales[mask", "name", "", "mask"),
])
def test_sites(before, kind, expr, typed):
    """The kind of name that follows, the expression whose value decides it, and what is typed of it."""
    site = cursor.locate(before)
    assert (site.kind, site.expr, site.typed) == (kind, expr, typed)


@pytest.mark.parametrize("before", [
    "x = 'sales.", "# sales.", "y = 1  # sales[", 's = """\nsales.', "f'{sales.", "", "x = 1\n", "for ",
    "for a, ", "lambda x", "def f(", "with open(p) as ", "import os.", "from os import pa", "x = [", "a, ",
    "x = 3.", "if x:\n    pass\n  y.", "x = )",
])
def test_no_constraint(before):
    """Strings, comments, statement starts, binding positions, imports and unreadable code hold nothing."""
    site = cursor.locate(before)
    assert site.kind == "" and site.note


def test_given_keywords_and_bound_names():
    """Keywords already in the call are listed; names bound in the cell are known as such."""
    site = cursor.locate("f(1, axis=0, ")
    assert (site.given, site.positional) == (("axis",), 1)
    assert cursor.locate("f(*xs, ").positional == -1  # unknown: nothing is taken as filled
    bound = cursor.bound_in("a, b = 1, 2\nfor r in rows:\n    df['x'] = r\ndef g(p, *q, k=1): pass\nimport numpy as np")
    assert {"a", "b", "r", "g", "p", "q", "k", "np"} <= bound and "df" not in bound


def test_where_no_positional_argument_can_come_the_argument_must_begin_with_a_keyword():
    """Positions filled and no ``*args``, or a keyword given already: a positional argument there is a
    TypeError or a SyntaxError, so the keywords left are required heads; where a position is open, not."""
    def smooth(x, *, window_len=5, mode="same"):
        return x

    def spread(x, *rest, k=1):
        return x

    def g(a, b=1, *, c=2):
        return a

    ns = {"smooth": smooth, "spread": spread, "g": g, "wave": [1.0]}
    answer = lambda before: cursor.names_at(ns, before, may_fork=False)  # noqa: E731
    for before, names in [("smoothed = smooth(wave, ", ["window_len=", "mode="]), ("g(1, 2, ", ["c="]),
                          ("g(a=1, ", ["b=", "c="]), ("g(1, c=0, ", ["b="])]:
        got = answer(before)
        assert (got.kind, got.required, got.names) == ("parameter", True, names), before
    for before in ["smooth(", "spread(wave, ", "g(1, ", "smooth(*xs, "]:
        got = answer(before)
        assert got.kind == "parameter" and not got.required and "wave" in got.names, before


def test_locate_survives_random_fragments():
    """Thousands of random fragment soups: always a Site and an Answer, never an exception."""
    parts = ["sales", ".", "(", ")", "[", "]", "'", '"', "'''", "#", "\n", "    ", ",", "=", ":", "lambda",
             "for", "in", "def", "f", "1", "\\", "{", "}", "*", "**", "é", "\t", "loc", "import", ";", "\x00"]
    rng = random.Random(17)
    for _ in range(3000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 14)))
        site = cursor.locate(text)
        assert isinstance(site, cursor.Site) and site.kind in ("", "attribute", "column", "parameter", "name")
        assert isinstance(cursor.names_at({"sales": [1]}, text, may_fork=False), cursor.Answer)


def test_a_registered_pandas_accessor_is_listed_in_a_fork():
    """dir() of a frame instantiates registered accessors: with a user one, `df.` is listed in a fork, not here."""
    pd = pytest.importorskip("pandas")
    ran = []

    @pd.api.extensions.register_dataframe_accessor("specgen_probe")
    class Probe:
        def __init__(self, obj):
            ran.append(obj)

    try:
        frame = pd.DataFrame({"units": [1, 2]})
        answer = cursor.names_at({"df": frame}, "df.", budget_ms=5000)
        assert {"specgen_probe", "units", "groupby"} <= set(answer.names) and "fork" in answer.note
        assert ran == []  # the accessor's __init__ ran in the fork only
    finally:
        del pd.DataFrame.specgen_probe
        pd.DataFrame._accessors.discard("specgen_probe")


def test_cursor_messages_round_trip():
    """The cursor request and reply decode to equal objects; a kind the protocol does not know is refused."""
    from jupyter_specgen.kernel.messages import CursorReply, CursorRequest, ProtocolError, decode, to_data

    request = CursorRequest(id=4, before="sales.", after=")", notebook=["x = 1"], budget_ms=80)
    reply = CursorReply(reply_to=4, kind="column", names=["'units'", '"units"'], typed="'u", required=True)
    assert decode(to_data(request)) == request and decode(to_data(reply)) == reply
    with pytest.raises(ProtocolError):
        decode(to_data(reply) | {"kind": "anything"})


def test_a_flat_frames_label_head_ends_with_its_bracket_but_a_multiindex_one_does_not():
    """``df['a', 'B']`` is a KeyError on flat columns (the head is ``'a']``) and a real key on
    MultiIndex columns (the head stays ``('a', 'x')`` and more may follow)."""
    pd = pytest.importorskip("pandas")
    flat = pd.DataFrame({"temp_c": [1.0], "rain_mm": [2.0]})
    wide = pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")]))
    ns = {"flat": flat, "wide": wide, "g": flat.groupby("temp_c")}
    assert set(cursor.names_at(ns, "mean_temp = flat[", may_fork=False).names) == \
        {"'temp_c']", '"temp_c"]', "'rain_mm']", '"rain_mm"]'}
    assert "'rain_mm']" in cursor.names_at(ns, "g[", may_fork=False).names
    assert cursor.names_at(ns, "wide[", may_fork=False).names == ["('a', 'x')", "('a', 'y')"]
    assert "'temp_c'" in cursor.names_at(ns, "flat.loc[:, ", may_fork=False).names
