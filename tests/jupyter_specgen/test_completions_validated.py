"""Only what holds up reaches the browser: a real Jupyter server, a real kernel started through its
REST API (so the kernel extension is loaded), real forked validation, the real browser websocket.

The model's candidates are made deterministic by a scripted backend client (the one seam: it
answers ``generate`` with given texts, one ``on_candidate`` at a time, as the backend does when
each row ends); everything after it is the real path. The constraint tests at the end run the
real backend with the tiny model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Optional

import pytest
from jupyter_client.asynchronous import AsyncKernelClient
from specgen_backend.protocol import Candidate, Result

from jupyter_specgen.backend_client import BackendState
from jupyter_specgen.protocol import PROTOCOL_VERSION

# Column labels that appear nowhere in the notebook's code: only the live frame knows them.
SETUP = ("import pandas as pd\n"
         "sales = pd.DataFrame({'qz' + 'units': [3, 4], 'qz' + 'price': [1.5, 2.0]})")


@pytest.fixture
def specgen_config():
    """Extra SpecgenExtension settings; tests parametrize it to switch one part off."""
    return {}


@pytest.fixture
def jp_server_config(tiny_model, specgen_config):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
        "SpecgenExtension": {"model": tiny_model, "max_tokens": 16, "candidates": 3, "temperature": 1.0,
                             # The shared test machine is slow: give the kernel room to answer.
                             "specs_budget_ms": 3000, **specgen_config},
    }


class ScriptedBackend:
    """Answers ``generate`` with the given texts, candidate by candidate (``gap_s`` apart)."""

    def __init__(self, texts: list[str], *, gap_s: float = 0.0):
        self.texts = texts
        self.gap_s = gap_s
        self.calls: list[dict] = []
        self.state = BackendState(state="ready", model="scripted", device="cpu")

    def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def set_state(self, state) -> None:
        pass

    async def generate(self, *, user, context, n, max_tokens, temperature, on_token, adapters=(), personal=False,
                       constraint=None, on_candidate=None) -> Result:
        self.calls.append({"context": context, "constraint": constraint, "n": n, "max_tokens": max_tokens})
        candidates = []
        for i, text in enumerate(self.texts):
            on_token(i, text)
            candidate = Candidate(text=text, logprob=-float(i), finish_reason="stop")
            candidates.append(candidate)
            if on_candidate is not None:
                on_candidate(i, candidate)
            await asyncio.sleep(self.gap_s)
        return Result(reply_to="scripted", candidates=candidates, model="scripted")


def _script(jp_serverapp, texts, **kw) -> ScriptedBackend:
    """Put the scripted backend in place of the real one (before any tab starts the real one)."""
    service = jp_serverapp.web_app.settings["specgen"]
    service.process = None
    service.client = ScriptedBackend(texts, **kw)
    return service.client


async def _kernel(jp_fetch, jp_serverapp, code: str = SETUP) -> str:
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(reply.body)["id"]
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = AsyncKernelClient()
    client.load_connection_info(km.get_connection_info(session=False))
    client.hb_channel.time_to_dead = 10.0  # a kernel still importing on a loaded machine is not dead
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=120)
        reply = await client.execute_interactive(code, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
    return kernel_id


async def _open(jp_ws_fetch):
    ws = await jp_ws_fetch("specgen", "ws")
    while json.loads(await asyncio.wait_for(ws.read_message(), 120))["state"] != "ready":
        pass
    return ws


def _complete(id: int, kernel_id: Optional[str], prefix: str, *, stream: bool = False, cells=None) -> str:
    return json.dumps({
        "type": "complete", "version": PROTOCOL_VERSION, "id": id, "path": "a.ipynb", "cell_id": "c",
        "prefix": prefix, "suffix": "", "cells": cells or [{"cell_type": "code", "source": prefix}], "active": 0,
        "kernel_id": kernel_id, "stream": stream,
    })  # fmt: skip


async def _frames(ws, id: int) -> list[dict]:
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if frame.get("reply_to") == id:
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


async def test_only_candidates_that_run_reach_the_browser_best_first(jp_fetch, jp_ws_fetch, jp_serverapp):
    """Of five candidates where three raise, only the two that ran are sent (shown and done), ranked."""
    texts = ["sales['qzunits'].sum()", "s.sum()", "sales['nope']", "sales.qzprice.mean()", "undefined_name + 1"]
    _script(jp_serverapp, texts)
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = "))
    frames = await _frames(ws, 1)
    done = frames[-1]
    assert done["type"] == "done", done
    assert [i["text"] for i in done["items"]] == [texts[0], texts[3]], done
    assert {i["verdict"] for i in done["items"]} == {"ran"}
    assert done["rejected"] == 3 and done["summary"] == ""
    shown = [f["item"]["text"] for f in frames if f["type"] == "shown"]
    assert sorted(shown) == sorted([texts[0], texts[3]])
    sent = json.dumps(frames)
    for bad in (texts[1], texts[2], texts[4]):
        assert json.dumps(bad)[1:-1] not in sent, f"{bad!r} raised and must never reach the browser"
    assert not [f for f in frames if f["type"] == "chunk"], "no raw text unless the request asks to stream"
    ws.close()


async def test_when_all_raise_nothing_is_shown_and_the_summary_says_why(jp_fetch, jp_ws_fetch, jp_serverapp):
    """Three candidates that all raise the same NameError: no item, a summary grouping them in words."""
    _script(jp_serverapp, ["s.sum()", "s.mean()", "s + 1"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = "))
    frames = await _frames(ws, 1)
    done = frames[-1]
    assert done["items"] == [] and done["rejected"] == 3
    assert done["summary"] == "no suggestion: 3 candidates raised NameError: name 's' is not defined"
    assert not [f for f in frames if f["type"] == "shown"]
    ws.close()


async def test_an_unfinished_for_header_is_shown_as_incomplete(jp_fetch, jp_ws_fetch, jp_serverapp):
    """A `for` header the user will go on to fill is an unfinished statement, not an error: shown as incomplete."""
    _script(jp_serverapp, ["for row in sales.itertuples():\n"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, ""))
    done = (await _frames(ws, 1))[-1]
    assert [(i["text"], i["verdict"]) for i in done["items"]] == [("for row in sales.itertuples():\n", "incomplete")], done
    ws.close()


async def test_comments_and_blank_candidates_are_not_suggestions(jp_fetch, jp_ws_fetch, jp_serverapp):
    """A candidate that adds only a comment or whitespace is not shown as "ran"; the summary says so."""
    _script(jp_serverapp, ["\n# total of the units", "   \n", "# compute"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "x = 1\n"))
    done = (await _frames(ws, 1))[-1]
    assert done["items"] == []
    assert done["summary"] == "no suggestion: 2 candidates were only a comment; 1 candidate was empty", done
    ws.close()


async def test_shown_frames_come_before_done_and_chunks_only_when_streaming(jp_fetch, jp_ws_fetch, jp_serverapp):
    """Each candidate that held up is sent as `shown` as soon as it is validated, before `done`;
    raw `chunk`s come only with stream=true, and duplicates are merged."""
    texts = ["sales.qzunits.sum()", "sales.qzunits.sum( )", "sales.qzprice.max()"]
    _script(jp_serverapp, texts, gap_s=0.3)
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "top = ", stream=True))
    frames = await _frames(ws, 1)
    kinds = [f["type"] for f in frames]
    assert kinds[-1] == "done" and kinds.count("shown") == 2, kinds
    assert kinds[0] == "progress" and frames[0]["stage"] == "specs"
    assert "generating" in [f.get("stage") for f in frames]
    assert kinds.index("shown") < len(kinds) - 1
    chunks = "".join(f["text"] for f in frames if f["type"] == "chunk")
    assert texts[0] in chunks, "stream=true sends the raw text"
    validating = [f for f in frames if f.get("stage") == "validating"]
    assert validating[-1]["done"] == validating[-1]["total"] == 2, validating
    assert [i["text"] for i in frames[-1]["items"]] == [texts[0], texts[2]]
    ws.close()


@pytest.mark.parametrize("specgen_config", [{"validate": False}])
async def test_with_validation_off_candidates_are_shown_not_validated_with_the_reason(
        jp_fetch, jp_ws_fetch, jp_serverapp, specgen_config):
    """validate=False alone: nothing is run, every candidate is shown as not_validated, saying why."""
    _script(jp_serverapp, ["s.sum()", "sales.qzunits.sum()"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = "))
    done = (await _frames(ws, 1))[-1]
    assert [i["verdict"] for i in done["items"]] == ["not_validated", "not_validated"]
    assert all("validation is off" in i["detail"] for i in done["items"]), done["items"]
    ws.close()


async def test_the_frames_columns_reach_the_backend_as_the_constraint(jp_fetch, jp_ws_fetch, jp_serverapp):
    """After `sales[` the backend is asked to hold the head to the live frame's column labels (and the `]`)."""
    backend = _script(jp_serverapp, ["'qzunits']"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "sales["))
    done = (await _frames(ws, 1))[-1]
    constraint = backend.calls[-1]["constraint"]
    assert constraint is not None and constraint.kind == "column", constraint
    assert {"'qzunits']", "'qzprice']"} <= set(constraint.names), constraint
    assert [i["text"] for i in done["items"]] == ["'qzunits']"]
    ws.close()


@pytest.mark.parametrize("specgen_config", [{"constrain": False}])
async def test_with_constrain_off_no_constraint_is_sent(jp_fetch, jp_ws_fetch, jp_serverapp, specgen_config):
    """constrain=False alone: the backend decodes freely, and validation still runs."""
    backend = _script(jp_serverapp, ["'qzunits']", "'nope']"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "sales["))
    done = (await _frames(ws, 1))[-1]
    assert backend.calls[-1]["constraint"] is None
    assert [(i["text"], i["verdict"]) for i in done["items"]] == [("'qzunits']", "ran")], done
    ws.close()


@pytest.mark.parametrize("specgen_config", [{"validate": False, "candidates": 4, "max_tokens": 16}])
async def test_constrained_decoding_writes_one_of_the_frames_columns(jp_fetch, jp_ws_fetch, jp_serverapp,
                                                                     specgen_config):
    """The real backend with the tiny model: after `sales[` every candidate begins with one of the live
    frame's column labels, which appear nowhere in the notebook's code (validation off: the raw heads)."""
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    cells = [{"cell_type": "code", "source": SETUP}, {"cell_type": "code", "source": "sales["}]
    body = json.loads(_complete(1, kernel_id, "sales[", cells=cells))
    body["active"] = 1
    ws.write_message(json.dumps(body))
    done = (await _frames(ws, 1))[-1]
    assert done["type"] == "done" and done["items"], done
    for item in done["items"]:
        assert item["text"].startswith(("'qzunits'", "'qzprice'", '"qzunits"', '"qzprice"')), item
    ws.close()


async def test_a_frame_methods_label_argument_sends_its_labels_as_string_heads(jp_fetch, jp_ws_fetch, jp_serverapp):
    """After `sales.groupby(` the constraint the backend gets is optional (any expression may come) and its
    heads hold the live frame's labels, so a string the model begins is one of them (the backend's masks
    for such heads: tests/backend/test_constraint.py)."""
    backend = _script(jp_serverapp, ["'qzunits').sum()"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "by = sales.groupby("))
    done = (await _frames(ws, 1))[-1]
    constraint = backend.calls[-1]["constraint"]
    assert (constraint.kind, constraint.required) == ("parameter", False), constraint
    assert {"'qzunits'", "'qzprice'", "by=", "sales"} <= set(constraint.names), constraint
    assert [i["text"] for i in done["items"]] == ["'qzunits').sum()"], done
    ws.close()


async def test_a_function_body_is_exercised_with_the_notebooks_own_call(jp_fetch, jp_ws_fetch, jp_serverapp):
    """Inside a def whose call the notebook has, a body that raises when called is never shown; one that
    runs is shown "ran"."""
    _script(jp_serverapp, ["s.qzunits.sum()", "df.qzunits.sum()"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    prefix = "def total(df):\n    return "
    cells = [{"cell_type": "code", "source": prefix}, {"cell_type": "code", "source": "total(sales)"}]
    ws.write_message(_complete(1, kernel_id, prefix, cells=cells))
    done = (await _frames(ws, 1))[-1]
    assert [(i["text"], i["verdict"]) for i in done["items"]] == [("df.qzunits.sum()", "ran")], done
    assert done["rejected"] == 1
    ws.close()


async def test_a_function_body_never_called_is_shown_as_defined(jp_fetch, jp_ws_fetch, jp_serverapp):
    """Inside a def the notebook never calls, a body that defines cleanly is "defined", not "ran"."""
    _script(jp_serverapp, ["df.qzunits.sum()"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    prefix = "def total(df):\n    return "
    ws.write_message(_complete(1, kernel_id, prefix))
    done = (await _frames(ws, 1))[-1]
    assert [i["verdict"] for i in done["items"]] == ["defined"], done
    assert "not exercised" in done["items"][0]["detail"]
    ws.close()


async def test_a_bracket_left_open_above_the_notebooks_own_call_is_not_shown_as_defined(jp_fetch, jp_ws_fetch,
                                                                                        jp_serverapp):
    """`return sum(` + `qz_nope, 3,` with `total = cart_total(cart)` below it in the cell: closed at the
    cell's end, the bracket took the call in as an argument and the body looked "defined, not exercised"
    (a case of the quality benchmark). It is not shown; a candidate that closes the bracket is exercised by
    that call and shown "ran"."""
    _script(jp_serverapp, ["qz_nope, 3,", "x * 2 for x in items)"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp, "cart = [1, 2, 3]")
    ws = await _open(jp_ws_fetch)
    prefix, suffix = "def cart_total(items):\n    return sum(", "\n\n\ntotal = cart_total(cart)"
    message = json.loads(_complete(1, kernel_id, prefix, cells=[{"cell_type": "code", "source": prefix + suffix}]))
    ws.write_message(json.dumps({**message, "suffix": suffix}))
    done = (await _frames(ws, 1))[-1]
    assert [(i["text"], i["verdict"]) for i in done["items"]] == [("x * 2 for x in items)", "ran")], done
    assert done["rejected"] == 1
    ws.close()


async def test_junk_inside_an_open_bracket_is_not_taken_for_an_unfinished_statement(jp_fetch, jp_ws_fetch,
                                                                                     jp_serverapp):
    """Garbage after `sales['un` leaves a bracket open, but it is wrong, not unfinished: never shown."""
    _script(jp_serverapp, ["its',\n    'c', 0.0.  #  '3'  0x, 0.0.0.0.", "its']"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp, SETUP + "\nsales['units'] = sales['qzunits']")
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = sales['un"))
    done = (await _frames(ws, 1))[-1]
    assert [(i["text"], i["verdict"]) for i in done["items"]] == [("its']", "ran")], done
    ws.close()


async def test_a_bracket_left_open_at_the_end_of_the_line_is_closed_and_then_validated(jp_fetch, jp_ws_fetch,
                                                                                     jp_serverapp):
    """After `sales[`, the head `'qzunits'` alone is shown closed (`'qzunits']`, ran); a wrong column still is not."""
    _script(jp_serverapp, ["'qzunits'", "'nope'"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = sales["))
    done = (await _frames(ws, 1))[-1]
    assert [(i["text"], i["verdict"]) for i in done["items"]] == [("'qzunits']", "ran")], done
    assert "KeyError" in done["summary"] or done["rejected"] == 1
    ws.close()


async def test_a_right_start_before_junk_is_shown_cut_back_and_only_once_it_ran(jp_fetch, jp_ws_fetch, jp_serverapp):
    """The model writes the right column or call and then junk that does not parse: the longest
    cut of it that runs is shown (`'qzunits']`, `.sum()`); a cut that raises is not (`.nope()`: the
    fourth candidate comes back to `'qzunits']`, one item with the first), and a candidate that
    parses and raises is not cut back at all (`sales['nope']` is never shown as `sales`)."""
    texts = ["'qzunits', 0.0.0.5, [0, 2", "'qzprice'].sum(0x9, 0.0.0.0", "'nope']", "'qzunits'].nope(1, 2.2.2"]
    _script(jp_serverapp, texts)
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = sales["))
    frames = await _frames(ws, 1)
    done = frames[-1]
    shown = {i["text"]: i["verdict"] for i in done["items"]}
    assert shown == {"'qzunits']": "ran", "'qzprice'].sum()": "ran"}, done
    assert sorted(f["item"]["text"] for f in frames if f["type"] == "shown") == sorted(shown)
    assert "nope" not in json.dumps([f for f in frames if f["type"] != "done"])
    assert done["rejected"] == 1 and "KeyError" not in json.dumps(done["items"])
    ws.close()


async def test_after_a_dot_a_methods_name_is_shown_called(jp_fetch, jp_ws_fetch, jp_serverapp):
    """After ``expr.`` a weak model writes a method's name and then stops or writes junk: the name
    alone is a bound method (no value), so the method is also run called, and ``sum()`` is what
    is shown, once for both candidates; an attribute that is not callable is not called
    (``qzunits``: a Series), and a name that is not there is never shown."""
    _script(jp_serverapp, ["sum", "sum 0x9, 0.0.0", "qzbogus"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = sales['qzunits']."))
    done = (await _frames(ws, 1))[-1]
    assert [(i["text"], i["verdict"]) for i in done["items"]] == [("sum()", "ran")], done
    _script(jp_serverapp, ["qzunits"])
    ws.write_message(_complete(2, kernel_id, "column = sales."))
    done = (await _frames(ws, 2))[-1]
    assert [(i["text"], i["verdict"]) for i in done["items"]] == [("qzunits", "ran")], done
    ws.close()


async def test_two_candidates_cut_back_to_one_text_are_one_item(jp_fetch, jp_ws_fetch, jp_serverapp):
    _script(jp_serverapp, ["'qzunits', 0.0.0.5", "'qzunits'  # 0x, 0.0.0. [", "'qzunits']"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = sales["))
    frames = await _frames(ws, 1)
    assert [i["text"] for i in frames[-1]["items"]] == ["'qzunits']"], frames[-1]
    assert [f["item"]["text"] for f in frames if f["type"] == "shown"] == ["'qzunits']"]
    ws.close()


async def test_of_two_copies_of_one_code_the_one_without_an_unchecked_comment_is_shown(jp_fetch, jp_ws_fetch,
                                                                                        jp_serverapp):
    """The likelier copy ends in a comment nothing checked: the item is the bare code, with its score."""
    _script(jp_serverapp, ["'qzunits']  # 0x, 0.0.0. [", "'qzunits']"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    ws.write_message(_complete(1, kernel_id, "total = sales["))
    frames = await _frames(ws, 1)
    assert [(i["text"], i["score"]) for i in frames[-1]["items"]] == [("'qzunits']", 0.0)], frames[-1]
    ws.close()


async def test_inside_a_line_the_candidates_get_the_mid_line_token_budget(jp_fetch, jp_ws_fetch, jp_serverapp):
    """`total = sales[` is the rest of one statement: it gets `max_tokens_mid_line` tokens; the start of a
    new line gets `max_tokens`."""
    backend = _script(jp_serverapp, ["'qzunits']"])
    kernel_id = await _kernel(jp_fetch, jp_serverapp)
    ws = await _open(jp_ws_fetch)
    service = jp_serverapp.web_app.settings["specgen"]
    service.completion_settings = dataclasses.replace(service.completion_settings, max_tokens=40,
                                                      max_tokens_mid_line=12)
    ws.write_message(_complete(1, kernel_id, "total = sales["))
    await _frames(ws, 1)
    ws.write_message(_complete(2, kernel_id, "total = 1\n"))
    await _frames(ws, 2)
    assert [c["max_tokens"] for c in backend.calls] == [12, 40]
    ws.close()
