"""Decoding held to the live state: head masks, syntax masks, statement and separator stops, safe sampling."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading

import pytest
import pytest_asyncio
import torch
from specgen_backend.constraint import IDENT_CHARS, HeadGuide, RowGuide, TokenTable, eos_allowed, open_statement, token_allowed, token_texts
from specgen_backend.engine import _Row, _sample, _spread_heads
from specgen_backend.prompt import CodeScanner, find_stop, mid_line, stop_strings
from specgen_backend.protocol import Cell, CompletionContext, Constraint, Generate

from .test_serving import TOKEN, connect_ready, frame, make_adapter

# Names that appear nowhere in any prompt below (nor in the tokenizer's training corpus as words).
COLUMNS = ["'qzx_units'", "'wvk_region'", "'qzx_unit_price'", "42"]
ATTRIBUTES = ["zorbify", "zorbi", "kwlmean"]
NAMES = ["frame_qq", "frobnicate", "print", "len"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def table(tokenizer):
    return TokenTable.from_tokenizer(tokenizer, len(tokenizer), {tokenizer.eos_token_id})


def _guide(constraint, table, prefix=""):
    scanner = CodeScanner()
    scanner.feed(prefix)
    return RowGuide(scanner, statement=False, heads=HeadGuide(constraint, table))


def _walk(guide, generated, table):
    """Advance ``guide`` over ``generated`` as the model would have produced it (one piece)."""
    if generated:
        guide.advance(generated, False)
    return guide


CASES = [
    Constraint(kind="attribute", names=ATTRIBUTES),
    Constraint(kind="attribute", names=["groupby", "group", "gr2"], typed="gr"),
    Constraint(kind="column", names=COLUMNS, typed="'qzx"),
    Constraint(kind="parameter", names=["axis=", "ascending="], required=False),
    Constraint(kind="name", names=NAMES, required=False),
    # a frame method's call: any expression, but a string is one of the frame's labels
    Constraint(kind="parameter", names=["by=", "level=", "'qzxcountry'", '"qzxcountry"', "zorb"], required=False),
]


@pytest.mark.parametrize("constraint", CASES, ids=lambda c: f"{c.kind}-{c.typed or 'untyped'}-{'req' if c.required else 'opt'}")
def test_head_mask_equals_the_reference_semantics(constraint, table, tokenizer):
    """For every token of the vocabulary, the vectorised mask equals token_allowed (and EOS eos_allowed)."""
    heads = HeadGuide(constraint, table)
    checked = 0
    for generated in ["", " ", "z", "zorb", "zorbi", "oup", "_units", "_unit", "ax", "axis", "frame_", "print", "pri",
                      "'", " '", "'qzx", '"qzxc']:
        guide = _walk(_guide(constraint, table), generated, table)
        if guide.mode == "free":
            continue  # inconsistent with the heads or already past them: not a state decoding reaches
        mask = heads.mask(guide.mode == "undecided", guide.body)
        for i, text in enumerate(table.texts):
            if text is not None:
                assert bool(mask[i]) == token_allowed(constraint, generated, text), (generated, text)
        assert bool(mask[tokenizer.eos_token_id]) == eos_allowed(constraint, generated), generated
        checked += 1
    assert checked >= 2


def test_typed_and_boundary_rule(table):
    """`typed` keeps only heads it starts; a head ending in an identifier char needs a non-identifier after it."""
    constraint = Constraint(kind="attribute", names=["zorbi", "zorbify", "kwlmean"], typed="zo")
    assert token_allowed(constraint, "", "rb") and not token_allowed(constraint, "", "kwl")
    assert token_allowed(constraint, "", "rbi(") and token_allowed(constraint, "", "rbify")
    assert not token_allowed(constraint, "", "rbix")  # "zorbix" is no head: the boundary rule refuses it
    assert token_allowed(constraint, "rbi", "fy") and token_allowed(constraint, "rbi", ".")
    assert not eos_allowed(constraint, "rb") and eos_allowed(constraint, "rbi")
    guide = _guide(constraint, table)
    guide.advance("rbi", False)
    assert guide.mode == "pending"  # "zorbi" could still become "zorbify"
    guide.advance("(", False)
    assert guide.mode == "free"
    # A head ending in a non-identifier char is complete as soon as it is spelled.
    literal = _guide(Constraint(kind="column", names=["'units'"], typed="'"), table)
    literal.advance("units'", False)
    assert literal.mode == "free"


def test_required_and_optional(table, tokenizer):
    """Required: the completion starts with a head, EOS waits for one. Optional: only identifiers the model starts are held."""
    required = Constraint(kind="name", names=NAMES)
    assert not token_allowed(required, "", "(") and not token_allowed(required, "", " frame_qq")
    assert not bool(HeadGuide(required, table).mask(False, "")[tokenizer.eos_token_id])
    optional = Constraint(kind="name", names=NAMES, required=False)
    assert token_allowed(optional, "", "(") and token_allowed(optional, "", "42") and token_allowed(optional, "", "\n")
    assert token_allowed(optional, "", " frame") and not token_allowed(optional, "", " self")
    assert not token_allowed(optional, "", "self") and eos_allowed(optional, "")
    guide = _guide(optional, table)
    guide.advance("[", False)
    assert guide.mode == "free"  # not an identifier: the row decodes freely from here
    assert token_allowed(optional, "", "'anything'")  # no head is a string: strings are free


def test_an_optional_constraint_with_string_heads_holds_strings_too(table):
    """`df.groupby(`: any expression may come, but a string the model begins is one of the frame's labels."""
    labels = Constraint(kind="parameter", names=["by=", "'qzxcountry'", '"qzxcountry"'], required=False)
    assert token_allowed(labels, "", "'") and token_allowed(labels, "'", "qzx") and not token_allowed(labels, "'", "bar")
    assert token_allowed(labels, "", "[") and token_allowed(labels, "", "by") and not token_allowed(labels, "", "self")
    assert not eos_allowed(labels, "'qzx") and eos_allowed(labels, "'qzxcountry'")
    guide = _guide(labels, table)
    guide.advance("'", False)
    assert guide.mode == "pending" and guide.body == "'"
    only_single = Constraint(kind="parameter", names=["'qzxcountry'"], required=False)
    assert token_allowed(only_single, "", '"free text"')  # no head begins with a double quote


def test_byte_level_token_texts(tokenizer, table):
    """Byte-level pieces decode to their text (Ġ is a space); pieces that are part of a UTF-8 character are None."""
    vocab = tokenizer.get_vocab()
    # An ASCII word after the space: Ġ itself is a letter to str.isalpha, and the vocabulary's order
    # changes from process to process, so a run of Ġ could be picked otherwise.
    spaced = min(piece for piece in vocab if piece.startswith("\u0120") and len(piece) > 2
                 and piece[1:].isascii() and piece[1:].isalpha())
    assert table.texts[vocab[spaced]] == " " + spaced[1:]
    assert table.texts[vocab["\u00c3"]] is None  # byte 0xC3 alone: the start of a two-byte character
    assert table.texts[tokenizer.eos_token_id] is None
    sample = [i for i, t in enumerate(table.texts) if t is not None][::7]
    assert all(table.texts[i] == tokenizer.decode([i]) for i in sample)


def test_sentencepiece_token_texts():
    """SentencePiece pieces: ▁ is a space, <0xNN> pieces are bytes (None when not a whole character)."""
    fast = _sentencepiece_tokenizer()
    texts = token_texts(fast)
    assert texts[2] == " units" and texts[3] == "units" and texts[4] == "\n" and texts[5] is None
    assert texts[6] == " " and texts[0] is None and texts[1] is None


def test_unspellable_heads_release_the_row(table):
    """Heads no token can spell (nor continue a typed text toward) leave the row free, and are counted."""
    before = table.stats["released"]
    guide = _guide(Constraint(kind="name", names=["\u65e5\u672c"]), table)  # each character is several byte tokens
    assert guide.mask(table) is not None  # the syntax mask still applies
    assert guide.released and guide.mode == "free"
    typed = _guide(Constraint(kind="attribute", names=["zorbify"], typed="nope"), table)
    typed.mask(table)
    assert typed.released and table.stats["released"] == before + 2


def _allowed(table, prefix, text):
    scanner = CodeScanner()
    scanner.feed(prefix)
    mask = table.syntax_mask(scanner)
    ids = [i for i, t in enumerate(table.texts) if t == text]
    assert ids, f"no token spells {text!r}"
    return mask is None or bool(mask[ids[0]])


@pytest.mark.parametrize("prefix, inside", [
    ("total = ", True), ("x = sum(", True), ("y = df.", True), ("z = [1,\n", True), ("w = a +", True),
    ("x = 1\n", False), ("for v in items:\n    ", False), ("x = 1", False), ("s = 'a, ", False), ("a = 1,\n", False),
])
def test_a_row_inside_an_open_expression_may_not_begin_with_a_comment(table, prefix, inside):
    """After `total = ` or inside `sum(` a row that begins with `#` adds no code and is never shown
    ("was only a comment"); at a line start or after a complete statement a comment is allowed. The
    rule holds only while the row has written nothing but spaces."""
    scanner = CodeScanner()
    scanner.feed(prefix)
    assert open_statement(scanner, prefix) is inside
    guide = RowGuide(scanner, statement=False, heads=None, open_statement=open_statement(scanner, prefix))
    comment = next(i for i, t in enumerate(table.texts) if t and t.lstrip(" ").startswith("#"))
    rule = guide.rule(table)
    allowed = torch.ones(table.size, dtype=torch.bool) if rule is None else rule.mask(table.size)
    assert bool(allowed[comment]) is not inside
    if inside:
        guide.statement_end("1")  # once the row has written code, a comment may follow
        rule = guide.rule(table)
        assert rule is None or bool(rule.mask(table.size)[comment])


def test_syntax_mask_refuses_what_python_cannot_tokenize(table):
    """Closers beyond the open brackets, a second dot in a number, `,,` and operator runs over three are masked in code only."""
    assert _allowed(table, "x = f(a", ")") and not _allowed(table, "x = f(a", "))")
    assert not _allowed(table, "x = f(a", "]") and not _allowed(table, "x = 1", ")")
    assert _allowed(table, "x = [f(a", ")")
    assert not _allowed(table, "y = 0.0.", "0") and not _allowed(table, "y = 1..", "5") and _allowed(table, "y = 0.0", ".")
    assert _allowed(table, "y = 0.0", "0") and _allowed(table, "y = 1.", "5") and _allowed(table, "y = 1.0.", "r")
    assert not _allowed(table, "f(a,", ",") and not _allowed(table, "f(", ",") and _allowed(table, "f(a", ",")
    assert not _allowed(table, "x ==", "==") and _allowed(table, "x ", "==")
    assert _allowed(table, "s = 'a", ")") and _allowed(table, "s = 'a", ",")  # inside a string: text
    assert _allowed(table, "x = 1  # ", "))")  # inside a comment: no rule


def test_a_statement_that_assigns_gets_no_second_assignment_nor_a_tuple(table):
    """After ``due = inv.vat_rate`` no ``=`` outside brackets (``due = inv.vat_rate = [0, 2]`` would
    overwrite what the line reads); the first assignment, ``==``, a keyword argument and the next
    statement may still have one."""
    assert not _allowed(table, "due = inv.vat_rate", " =") and not _allowed(table, "due = inv.vat_rate ", "=")
    assert not _allowed(table, "n = flags['is_dog'];m = flags['is_cat']", " =")
    assert _allowed(table, "inv.vat_rate", " =")  # the statement's first assignment
    assert _allowed(table, "ok = x =", "=") and _allowed(table, "ok = x ", "==")  # a comparison
    assert _allowed(table, "due = f(a", "=")  # a keyword argument
    assert _allowed(table, "a = 1\nb", " =") and _allowed(table, "a = 1; b", " =")  # the next statement
    assert _allowed(table, "s = 'a", " =")  # inside a string: text
    # No comma outside brackets either: ``x = df.name.str.fullmatch, 'B'`` is a tuple of junk.
    assert not _allowed(table, "x = df.name.str.fullmatch", ",") and not _allowed(table, "x = 1", ",")
    assert _allowed(table, "x = f(a", ",") and _allowed(table, "df.a", ",") and _allowed(table, "x = [1", ",")
    assert _allowed(table, "a, b = b", ",") and not _allowed(table, "a, b = b, a\nc = d", ",")  # unpacking


def test_mid_line_and_statement_end():
    """Mid-line completions stop at a newline outside brackets and strings; not at one inside an open paren."""
    assert mid_line(CompletionContext(prefix="x = ")) and mid_line(CompletionContext(prefix="", suffix=")"))
    assert not mid_line(CompletionContext(prefix="for x in y:\n    ", suffix="\nprint(1)"))
    scanner = CodeScanner()
    scanner.feed("total = f(a,")
    assert scanner.feed("\n      b") == -1 and scanner.stack == ["("]
    assert scanner.feed(")\nz = 1") == 1
    assert CodeScanner().feed("s = '''a\nb'''\n") == 13
    assert CodeScanner().feed("x = 1 + \\\n 2\n") == 12
    assert CodeScanner().feed("for x in y:  # each\n\n    print(x)\nz") == len("for x in y:  # each\n\n    print(x)")


def test_cell_separator_stops_anywhere():
    """`In[` stops a completion wherever it starts (and takes the `#` before it); no longer only at a line start."""
    stops = stop_strings(CompletionContext(prefix="x = "))
    assert find_stop("y = 2  # In[3]:", stops) == len("y = 2  ")
    assert find_stop("y = 2In[3]", stops) == 5
    assert find_stop("y = 2\n# In[ ]:\nz", stops) == 6
    assert find_stop("y = 2\nIn [4]:", stops) == 6
    row = _Row(stops=stops)
    row.text = "sales.sum()  # In["
    row.check_stop()
    assert row.done and row.text.rstrip() == "sales.sum()"


def test_sample_is_safe_for_any_temperature_and_logits():
    """NaN/denormal temperatures decode greedily, inf is clamped, NaN/inf logits fall back to greedy over finite values."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 3.0, 1.0], [float("nan"), 1.0, 2.0], [float("inf"), 0.5, -1.0]])
    for temperature in (float("nan"), 1e-320, 0.0, -1.0):
        tokens, logprobs = _sample(logits, temperature, gen)
        assert tokens.tolist() == [1, 2, 1] and torch.isfinite(logprobs).all()
    tokens, logprobs = _sample(logits, float("inf"), gen)
    assert tokens[1:].tolist() == [2, 1] and torch.isfinite(logprobs).all()
    masked = torch.tensor([[float("-inf"), 0.0, float("-inf")]])
    tokens, logprobs = _sample(masked, 1.0, gen)
    assert tokens.tolist() == [1] and logprobs.tolist() == [0.0]  # under the constrained distribution
    with pytest.raises(ValueError):
        _sample(torch.full((1, 3), float("-inf")), 1.0, gen)


# ----------------------------------------------------------------------------------------------
# Through the real scheduler and the real websocket backend


@pytest.fixture(scope="module")
def scheduler(tiny_model):
    from specgen_backend.engine import Engine
    from specgen_backend.loading import load_model
    from specgen_backend.scheduler import Scheduler

    sched = Scheduler(Engine(load_model(tiny_model, device="cpu", dtype="auto")))
    yield sched
    sched.stop()


def _run(sched, requests, timeout=300):
    """Submit ``requests`` together; {id: (candidates, error)}."""
    from specgen_backend.scheduler import Job

    done, event = {}, threading.Event()

    def job(request):
        def finish(candidates, error):
            done[request.id] = (candidates, error)
            if len(done) == len(requests):
                event.set()

        return Job(request=request, rows=[None] * request.n, labels=[None] * request.n, emit=lambda i, t: None, finish=finish)

    for request in requests:
        sched.submit(job(request))
    assert event.wait(timeout)
    return done


def test_one_bad_request_fails_alone_in_the_scheduler(scheduler):
    """A request whose sampling raises (a non-string head that bypassed the codec) is answered alone; its batch neighbours are unchanged."""
    ctx = CompletionContext(prefix="def add(a, b):\n    return")
    other = Generate(id="other", user="bob", context=ctx, n=2, max_tokens=12, temperature=1.0)
    alone = _run(scheduler, [other])["other"]
    bad = Generate(id="bad", user="mallory", context=ctx, n=2, max_tokens=12, constraint=Constraint(kind="name", names=[3]))  # type: ignore[list-item]
    odd = [Generate(id=f"t{i}", user="eve", context=ctx, max_tokens=6, temperature=t) for i, t in enumerate([math.nan, 1e-320, math.inf])]
    together = _run(scheduler, [other, bad, *odd])
    assert together["bad"][0] is None and together["bad"][1][0] == "internal" and "strings" in together["bad"][1][1]
    assert [c.text for c in together["other"][0]] == [c.text for c in alone[0]]
    assert all(together[r.id][1] is None and len(together[r.id][0]) == 1 for r in odd)
    greedy = _run(scheduler, [Generate(id="g", user="eve", context=ctx, max_tokens=6)])["g"][0]
    assert together["t0"][0][0].text == together["t1"][0][0].text == greedy[0].text  # NaN and denormal: greedy


def test_statement_stop_mid_line_in_the_scheduler(scheduler):
    """Mid-line, sampled candidates never run past the end of their statement; inside an open paren they may wrap."""
    requests = [Generate(id=f"m{i}", user="u", context=CompletionContext(prefix=prefix), n=6, max_tokens=40, temperature=1.0)
                for i, prefix in enumerate(["x = ", "total = f(a,", "y = [1,"])]  # fmt: skip
    out = _run(scheduler, requests)
    stopped = 0
    for request in requests:
        for candidate in out[request.id][0]:
            scanner = CodeScanner()
            scanner.feed(request.context.prefix)
            assert scanner.feed(candidate.text) == -1, candidate.text
            assert "In[" not in candidate.text and "In [" not in candidate.text
            stopped += candidate.finish_reason == "stop"
    assert stopped >= 3  # the rule really cut: random weights emit newlines often


def test_rows_of_one_request_spread_over_the_heads(scheduler):
    """Greedy rows at an open head write different heads (best, second best, ...), each one of the
    frame's. Without the spread these greedy rows are identical."""
    constraint = Constraint(kind="column", names=COLUMNS[:3], typed="'")
    ctx = CompletionContext(prefix="total = frame['")
    n = 3
    out = _run(scheduler, [Generate(id="spread", user="u", context=ctx, n=n, max_tokens=24, constraint=constraint)])
    candidates, error = out["spread"]
    assert error is None
    heads = []
    for candidate in candidates:
        head = next((c for c in COLUMNS[:3] if ("'" + candidate.text).startswith(c)), None)
        assert head is not None, candidate.text
        heads.append(head)
    assert len(set(heads)) == n, heads
    assert all(math.isfinite(c.logprob) for c in candidates)


def test_the_first_row_writes_the_head_the_notebook_names(scheduler):
    """With ``preferred`` heads (those the notebook's words name), row 0 writes one of them even
    where the model would write another, and the other rows still spread over different heads."""
    ctx = CompletionContext(prefix="total = frame['")
    plain = Constraint(kind="column", names=COLUMNS[:3], typed="'")
    greedy = _run(scheduler, [Generate(id="g", user="u", context=ctx, n=3, max_tokens=24, constraint=plain)])["g"][0]

    def head(candidate):
        return next(c for c in COLUMNS[:3] if ("'" + candidate.text).startswith(c))

    unliked = head(greedy[-1])  # the head the model likes least of the three
    assert head(greedy[0]) != unliked
    steered = Constraint(kind="column", names=COLUMNS[:3], typed="'", preferred=[unliked])
    candidates, error = _run(scheduler, [Generate(id="s", user="u", context=ctx, n=3, max_tokens=24,
                                                  constraint=steered)])["s"]
    assert error is None
    heads = [head(c) for c in candidates]
    assert heads[0] == unliked and len(set(heads)) == 3, heads
    assert all(math.isfinite(c.logprob) for c in candidates)


def test_where_the_head_is_optional_the_first_row_begins_a_preferred_one(scheduler):
    """At ``stock[`` or ``sort_values(`` a variable or a mask may come, so the head is optional;
    a weak model writes ``0`` there. With ``preferred`` heads, row 0 begins one and writes it
    whole, also when it is the only row (or the last alive: steering once stopped with the other
    rows, and the row wrote another label from the same start); the other rows stay free."""
    ctx = CompletionContext(prefix="total = frame[")
    plain = Constraint(kind="column", names=COLUMNS[:3], typed="'")
    greedy = _run(scheduler, [Generate(id="g", user="u", context=ctx, n=3, max_tokens=24, constraint=plain)])["g"][0]
    unliked = next(c for c in COLUMNS[:3] if ("'" + greedy[-1].text).startswith(c))
    for n in (1, 3):
        free = Constraint(kind="column", names=COLUMNS[:3], required=False)
        unsteered = _run(scheduler, [Generate(id=f"f{n}", user="u", context=ctx, n=n, max_tokens=24,
                                              constraint=free)])[f"f{n}"][0]
        assert not unsteered[0].text.lstrip().startswith(unliked), "the test needs a row 0 that goes elsewhere"
        steered = dataclasses.replace(free, preferred=[unliked])
        candidates, error = _run(scheduler, [Generate(id=f"s{n}", user="u", context=ctx, n=n, max_tokens=24,
                                                      constraint=steered)])[f"s{n}"]
        assert error is None
        assert candidates[0].text.lstrip().startswith(unliked), (n, candidates[0].text)
        assert math.isfinite(candidates[0].logprob)


def test_rows_that_meet_on_a_token_without_text_are_left_alone():
    """Two rows at an open head that both take a token with no text (an end, a part of a character)
    keep it, and a row pushed off a taken head is never pushed to such a token: the spread reads
    a token's text only where it has one (it once raised TypeError here, so the request failed)."""
    from types import SimpleNamespace

    texts = [None, "a", "b", None]  # 0 and 3: tokens without a text
    heads = SimpleNamespace(rests=[("a", True), ("b", True)], preferred=[])

    def rows(count):
        return [SimpleNamespace(done=False, ids=[7], guide=SimpleNamespace(heads=heads, mode="pending", body="")) for _ in range(count)]

    logits = torch.tensor([[5.0, 1.0, 0.5, 4.0]] * 2)
    tokens = torch.tensor([0, 0])
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, tokens.view(-1, 1)).squeeze(1)
    _spread_heads(rows(2), logits, tokens, logprobs, texts)
    assert tokens.tolist() == [0, 0]

    # Three rows on head "a": the second takes "b" (not the likelier token 3), the third shares.
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]] * 3)
    tokens = torch.tensor([1, 1, 1])
    logprobs = torch.zeros(3)
    _spread_heads(rows(3), logits, tokens, logprobs, texts)
    assert tokens.tolist() == [1, 2, 1]
    assert logprobs[1].item() == pytest.approx(torch.log_softmax(logits[1], dim=-1)[2].item())


@pytest.fixture(scope="module")
def adapter_root(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("constraint-adapters")
    for seed, folder in enumerate([root / "alice" / "v1", root / "alice" / "v2", root / "bob" / "v1"]):
        make_adapter(tiny_model, folder, seed + 11)
    return root


@pytest_asyncio.fixture
async def backend(tiny_model, adapter_root):
    from specgen_backend.server import Backend, BackendConfig

    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, adapter_root=str(adapter_root), max_batch=16))
    await server.start()
    yield server
    await server.close()


def _starts_with_head(text: str, constraint: Constraint) -> bool:
    full = constraint.typed + text
    if not constraint.required and not constraint.typed:
        stripped = full.lstrip(" ")
        if not stripped or stripped[0] not in IDENT_CHARS or stripped[0].isdigit():
            return True
        full = stripped
    for head in constraint.names:
        if full == head or (full.startswith(head) and (head[-1] not in IDENT_CHARS or full[len(head)] not in IDENT_CHARS)):
            return True
    return False


@pytest.mark.asyncio
async def test_constrained_heads_for_every_row_of_a_mixed_batch(backend):
    """Columns, attributes and names absent from the prompt: every row of a batch mixing users, PEFT adapters and base rows starts with one of its own heads."""
    ws = await connect_ready(backend)
    for id, user, name in [("l1", "alice", "v1"), ("l2", "alice", "v2"), ("l3", "bob", "v1")]:
        await ws.send(frame("adapter_load", id, user=user, name=name, path=name))
        while json.loads(await asyncio.wait_for(ws.recv(), 60)).get("reply_to") != id:
            pass
    cells = [{"cell_type": "code", "source": "import pandas as pd\nframe_a = pd.read_csv('data.csv')"}, {"cell_type": "code", "source": ""}]
    column = Constraint(kind="column", names=COLUMNS)
    column_typed = Constraint(kind="column", names=COLUMNS, typed="'qzx_")
    attribute = Constraint(kind="attribute", names=ATTRIBUTES)
    name = Constraint(kind="name", names=NAMES, required=False)
    specs = [
        ("a", "alice", "x = frame_a[", ["v1", "v2"], 3, 1.0, column),
        ("b", "bob", "y = frame_a.", ["v1"], 2, 0.0, attribute),
        ("c", "carol", "z = frame_a[", [], 2, 1.0, column),
        ("d", "alice", "w = frame_a['qzx_", ["v2"], 2, 0.7, column_typed),
        ("e", "bob", "v = ", [], 3, 1.0, name),
        ("f", "carol", "u = frame_a.", [], 2, 1.0, None),
    ]
    for id, user, prefix, adapters, n, temperature, constraint in specs:
        body = {"prefix": prefix, "cells": cells, "active": 1}
        extra = {} if constraint is None else {"constraint": {"kind": constraint.kind, "names": constraint.names, "typed": constraint.typed, "required": constraint.required}}
        await ws.send(frame("generate", id, user=user, context=body, adapters=adapters, n=n, max_tokens=24, temperature=temperature, **extra))
    answers = {}
    while len(answers) < len(specs):
        msg = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if msg["type"] in ("result", "error"):
            answers[msg["reply_to"]] = msg
    rows = complete = 0
    for id, user, prefix, adapters, n, temperature, constraint in specs:
        reply = answers[id]
        assert reply["type"] == "result", reply
        assert len(reply["candidates"]) == n
        if adapters:
            assert {c["adapter"] for c in reply["candidates"]} == set(adapters)
        for candidate in reply["candidates"]:
            if constraint is not None:
                text = candidate["text"]
                whole = _starts_with_head(text, constraint)
                # Cut by max_tokens while spelling a head: what there is must be on the way to one.
                partial = candidate["finish_reason"] == "length" and any(h.startswith(constraint.typed + text.lstrip(" ")) for h in constraint.names)
                assert whole or partial, (id, text)
                rows += 1
                complete += whole
    assert rows == 12 and complete >= 9
    assert backend._scheduler.peak_rows >= 10  # they really were decoded in the same steps
    free = [c["text"] for c in answers["f"]["candidates"]]
    assert not any(_starts_with_head(t, attribute) for t in free)  # the constraint, not the model, made the heads
    await ws.close()


def test_first_token_keeps_its_space_with_sentencepiece():
    """A SentencePiece decoder drops a sequence's first ▁; the row text keeps it (the completion continues the line)."""
    from types import SimpleNamespace

    from specgen_backend.engine import Engine

    tokenizer = _sentencepiece_tokenizer()
    engine = Engine.__new__(Engine)  # only the row text is exercised: no model needed
    engine.loaded = SimpleNamespace(tokenizer=tokenizer)
    engine._tables = {len(tokenizer): TokenTable.from_tokenizer(tokenizer, len(tokenizer), {1})}
    assert tokenizer.decode([2, 7]) == "units("  # what the decoder alone gives
    assert engine.row_text([2, 7]) == " units(" and engine.row_text([3, 7]) == "units("


def _sentencepiece_tokenizer():
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1, "\u2581units": 2, "units": 3, "<0x0A>": 4, "<0xC3>": 5, "\u2581": 6, "(": 7}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
