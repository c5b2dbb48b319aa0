"""The notebook's words order candidates that ran: the name the user's intent names comes first."""

from __future__ import annotations


from jupyter_specgen.completions.relevance import intent_of, relevance, words_of
from jupyter_specgen.kernel.messages import Verdict
from jupyter_specgen.ranking import rank


def test_words_split_identifiers_strings_and_case():
    assert words_of("meanTemp_c 'rain_mm' sensor2") >= {"mean", "temp", "rain", "mm", "sensor", "2"}
    assert "the" not in words_of("the total of the units")


def test_the_assigned_name_the_markdown_and_the_comment_are_the_intent():
    assert relevance("'temp_c']", intent_of("mean_temp = weather[")) == 1
    assert relevance("'mar']", intent_of("march = wide[")) == 1  # "mar" begins "march"
    assert relevance("'rain_mm'", intent_of("wet = weather[weather[", "## Readings with more than 10 mm of rain")) == 2
    assert relevance("'units'", intent_of("x = 1  # sum of the units\ny = shop[")) == 1
    assert relevance("'sensor_2']", intent_of("spread = readings[", "Spread of sensor 2")) > \
        relevance("'sensor_1']", intent_of("spread = readings[", "Spread of sensor 2"))


def test_words_the_line_already_uses_tell_nothing_new():
    intent = intent_of("r = readings['sensor_0'].corr(readings[", "How sensors 0 and 1 move together")
    assert relevance("'sensor_1']", intent) > relevance("'sensor_0']", intent)


def test_no_intent_no_preference():
    assert relevance("'temp_c']", intent_of("weather[")) == 0


def test_relevance_orders_after_the_verdict_and_before_the_likelihood():
    ran = Verdict(index=0, status="ran")
    incomplete = Verdict(index=0, status="incomplete")
    texts = ["'rain_mm']", "'temp_c']", "'temp_c'"]
    ranked = rank(texts, [ran, ran, incomplete], [-0.1, -2.0, -0.5], relevance=[0, 1, 1])
    assert [r.text for r in ranked] == ["'temp_c']", "'rain_mm']", "'temp_c'"]
    assert [r.text for r in rank(texts[:2], [ran, ran], [-0.1, -2.0])] == ["'rain_mm']", "'temp_c']"]


def test_the_heads_the_intent_names_best_are_preferred_in_the_constraint():
    """The backend steers one row to ``Constraint.preferred``: the heads the notebook's words name
    best, and none when the words fit too many heads to tell them apart."""
    from jupyter_specgen.completions.context import MAX_PREFERRED, constraint_from_cursor, preferred_heads
    from jupyter_specgen.kernel.messages import CursorReply

    columns = ["'station'", "'temp_c'", "'rain_mm'", "'wind_ms'"]
    assert preferred_heads(columns, intent_of("mean_temp = weather[")) == ["'temp_c'"]
    sensors = ["'sensor_1'", "'sensor_2'", "'sensor_3'"]
    assert preferred_heads(sensors, intent_of("spread = readings[", "Spread of sensor 2")) == ["'sensor_2'"]
    assert preferred_heads(columns, intent_of("growth = weather[")) == []
    many = [f"'sensor_{i}'" for i in range(MAX_PREFERRED + 1)]
    assert preferred_heads(many, intent_of("s = readings[", "Every sensor")) == []

    reply = CursorReply(reply_to=1, kind="column", names=columns, typed="", required=True)
    assert constraint_from_cursor(reply, intent_of("mean_temp = weather[")).preferred == ["'temp_c'"]
    assert constraint_from_cursor(reply).preferred == []
    optional = CursorReply(reply_to=2, kind="name", names=["temp", "total"], typed="", required=False)
    assert constraint_from_cursor(optional, intent_of("mean_temp = ")).preferred == []


def test_an_optional_head_prefers_labels_and_keywords_never_bare_names():
    """Where a positional argument or a key may be any expression (``cities.groupby(``, a dict's
    ``stock[``), a label or a keyword the words name is preferred (one row begins it), but not a
    variable or a builtin the words also match: ``per_country`` is the name being assigned,
    ``COUNTRY`` a constant; either runs there and means nothing."""
    from jupyter_specgen.completions.context import constraint_from_cursor
    from jupyter_specgen.kernel.messages import CursorReply

    names = ["by=", "level=", "'city'", '"city"', "'country'", '"country"', "per_country", "COUNTRY", "len"]
    call = CursorReply(reply_to=1, kind="parameter", names=names, typed="", required=False)
    intent = intent_of("per_country = cities.groupby(", "## Population of each country")
    assert constraint_from_cursor(call, intent).preferred == ["'country'", '"country"']
    window = CursorReply(reply_to=2, kind="parameter", names=["window_len=", "mode=", "wave"], required=False)
    assert constraint_from_cursor(window, intent_of("smoothed = smooth(wave, ", "Smooth over a window of 9")
                                  ).preferred == ["window_len="]
    keys = CursorReply(reply_to=3, kind="column", names=["'SKU-007'", "'SKU-031'", "sku"], required=False)
    assert constraint_from_cursor(keys, intent_of("left = stock[", "## Stock of item 31")).preferred == ["'SKU-031'"]


def test_numbers_match_by_value():
    """"item 7" names ``'SKU-007'``: the digits of a label are often zero-padded."""
    assert relevance("'SKU-007'", intent_of("x = stock[", "Ten more of item 7")) == 1
    assert relevance("'SKU-070'", intent_of("x = stock[", "Ten more of item 7")) == 0
