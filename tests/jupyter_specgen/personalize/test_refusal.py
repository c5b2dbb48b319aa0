"""No training with nothing to measure on: with one notebook, the data summary says why a job cannot start
and what to do, and ``POST specgen/personalize`` answers that reason as a 400 (a real Jupyter server)."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from tornado.httpclient import HTTPClientError


@pytest.fixture
def jp_root_dir(tmp_path):
    """One notebook with three cells that ran cleanly: something to train on, nothing to hold out."""
    root = tmp_path / "root_dir"
    root.mkdir()
    cells = [new_code_cell(f"part_{i} = list(range({i + 5}))", execution_count=i + 1) for i in range(3)]
    nbformat.write(new_notebook(cells=cells), str(root / "only.ipynb"))
    return root


@pytest.fixture
def jp_server_config(tiny_model, tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
        "SpecgenExtension": {"model": tiny_model, "kernel_specs": False, "adapter_root": str(tmp_path / "adapters"),
                             "feedback_path": str(tmp_path / "feedback.sqlite")},
    }  # fmt: skip


async def test_one_notebook_start_is_refused_with_the_reason_and_what_to_do(jp_fetch, jp_root_dir):
    """The summary carries the refusal (no estimate); the start answers 400 with the same words; a
    second notebook lifts it and brings the estimate."""
    summary = json.loads((await jp_fetch("specgen", "personalize", "data", method="GET")).body)
    assert summary["train"] == 3 and summary["heldout"] == 0
    refusal = summary["refusal"]
    assert "needs at least 2 notebooks" in refusal and "you have 1 (only.ipynb)" in refusal, refusal
    assert "measure whether training helps" in refusal and "Run and save another notebook" in refusal
    assert summary["estimate"] is None

    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("specgen", "personalize", method="POST", body="{}")
    error = json.loads(info.value.response.body)["error"]
    assert info.value.code == 400 and error["type"] == "bad_request" and error["message"] == refusal

    cells = [new_code_cell(f"more_{i} = sorted(range({i + 3}))", execution_count=i + 1) for i in range(3)]
    for name in ("second.ipynb", "third.ipynb"):
        nbformat.write(new_notebook(cells=cells), str(jp_root_dir / name))
    summary = json.loads((await jp_fetch("specgen", "personalize", "data", method="GET")).body)
    assert summary["refusal"] == "" and summary["heldout"] > 0
    assert summary["estimate"]["steps"] >= 20 and summary["estimate"]["text"]


async def test_feedback_route_stores_an_accept_pending_then_kept_by_its_run(jp_fetch):
    """Through ``POST specgen/feedback``: an accept counts as pending, its clean run with the text kept makes
    it an example; a run report without a key is a 400 that says why."""
    accept = {"path": "only.ipynb", "prefix": "part_9 = ", "suggestion": "list(range(9))", "accepted": True,
              "cell_id": "c9", "key": "k-1", "cells": [], "active": -1}

    async def post(body):
        return await jp_fetch("specgen", "feedback", method="POST", body=json.dumps(body))

    async def data():
        return json.loads((await jp_fetch("specgen", "personalize", "data", method="GET")).body)

    assert (await post(accept)).code == 204
    summary = await data()
    assert (summary["feedback_pending"], summary["feedback_kept"], summary["from_feedback"]) == (1, 0, 0)
    assert (await post({**accept, "ran": {"source": "part_9 = list(range(9))\n", "success": True}})).code == 204
    summary = await data()
    assert (summary["feedback_pending"], summary["feedback_kept"], summary["from_feedback"]) == (0, 1, 1)
    assert summary["train"] == 4
    with pytest.raises(HTTPClientError) as info:
        await post({**accept, "key": "", "ran": {"source": "x", "success": True}})
    assert info.value.code == 400 and "needs the key" in json.loads(info.value.response.body)["error"]["message"]
