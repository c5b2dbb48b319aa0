"""Personalization through the Jupyter server: a real server over alice's notebooks, its real
backend child, the REST calls the panel makes and the pushes its tab receives; the executable rates
measured on the Jupyter side with the notebooks' data; the published adapter completing next."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_specgen.protocol import PROTOCOL_VERSION

from ...personal_data import idiom_rate


@pytest.fixture
def jp_root_dir(tmp_path, alice_root):
    """The Jupyter root: alice's notebooks, their CSV data and her helper module."""
    root = tmp_path / "root_dir"
    shutil.copytree(alice_root, root)
    return root


@pytest.fixture
def jp_server_config(pandas_base):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
        # Greedy and one candidate, so that base and adapter are compared on the same footing.
        "SpecgenExtension": {"model": str(pandas_base.path), "max_tokens": 40, "candidates": 1, "temperature": 0.0,
                             "personalize_steps": 120},
    }  # fmt: skip


async def _get(jp_fetch, *path):
    return json.loads((await jp_fetch("specgen", *path, method="GET")).body)


async def _post(jp_fetch, *path, body):
    reply = await jp_fetch("specgen", *path, method="POST", body=json.dumps(body))
    return reply.code, json.loads(reply.body) if reply.body else None


async def _error(call) -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as info:
        await call
    return info.value.code, json.loads(info.value.response.body)["error"]


class Tab:
    """A browser tab's websocket: keeps the pushed ``personalize`` messages while waiting for others."""

    def __init__(self, ws):
        self.ws = ws
        self.pushed: list[dict] = []
        self._ids = iter(range(1, 10_000))

    @classmethod
    async def open(cls, jp_ws_fetch):
        tab = cls(await jp_ws_fetch("specgen", "ws"))
        while True:
            frame = await tab._next()
            if frame["type"] == "status" and frame["state"] == "ready":
                return tab
            assert frame.get("state") != "error", frame

    async def _next(self, timeout=600) -> dict:
        frame = json.loads(await asyncio.wait_for(self.ws.read_message(), timeout))
        if frame["type"] == "personalize":
            self.pushed.append(frame)
        return frame

    async def until(self, predicate, timeout=900) -> dict:
        """The first pushed ``personalize`` message (already seen or next) satisfying ``predicate``."""
        seen = 0
        while True:
            for frame in self.pushed[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.pushed)
            await self._next(timeout)

    async def complete(self, example) -> dict:
        """The first item of a completion of ``example``'s cell, typed up to its prefix."""
        id = next(self._ids)
        cells = [*example.cells_before, {"cell_type": "code", "source": example.prefix}]
        self.ws.write_message(json.dumps({
            "type": "complete", "version": PROTOCOL_VERSION, "id": id, "path": example.notebook,
            "cell_id": f"cell-{id}", "prefix": example.prefix, "cells": cells, "active": len(cells) - 1,
        }))  # fmt: skip
        while True:
            frame = await self._next(120)
            if frame.get("reply_to") == id and frame["type"] in ("done", "error"):
                assert frame["type"] == "done", frame
                return frame["items"][0] if frame["items"] else {"text": "", "adapter": ""}


@pytest.mark.timeout(900)  # a whole training job, and the session's pandas_base fixture when it runs first
async def test_personalize_from_the_panel_calls_publishes_and_completes_with_the_adapter(
        jp_fetch, jp_ws_fetch, alice_dataset):
    """Data summary, feedback, a job judged on the Jupyter side, published, then used by the next completion."""
    summary = await _get(jp_fetch, "personalize", "data")
    assert summary["train"] == len(alice_dataset.train) and summary["heldout"] == len(alice_dataset.heldout)
    assert summary["notebooks_heldout"] == alice_dataset.notebooks_heldout
    assert {"reason": "raised", "count": 1} in summary["dropped"]  # the cell that raised is not used

    heldout = alice_dataset.heldout
    accepted = {"path": "scratch.ipynb", "prefix": "# load the visits\n", "suggestion": "visits = zq_tidy(pd.read_csv(\"visits.csv\"))",
                "accepted": True, "cells": [{"cell_type": "code", "source": "import pandas as pd"}], "active": 1,
                "cell_id": "c1", "key": "accept-1"}
    assert (await _post(jp_fetch, "feedback", body=accepted))[0] == 204  # pending until its cell runs
    ran = {"source": accepted["prefix"] + accepted["suggestion"] + "\n", "success": True}
    assert (await _post(jp_fetch, "feedback", body={**accepted, "ran": ran}))[0] == 204  # kept: an example
    assert (await _post(jp_fetch, "feedback", body={**accepted, "accepted": False, "suggestion": "x = 1", "key": ""}))[0] == 204
    code, error = await _error(_post(jp_fetch, "feedback", body={"path": "a.ipynb", "accepted": "yes"}))
    assert code == 400 and error["type"] == "malformed" and "FeedbackReport.prefix" in error["message"]
    code, error = await _error(_post(jp_fetch, "feedback", body={**accepted, "suggestion": "x" * (2 << 20)}))
    assert code == 413 and error["type"] == "too_large"
    summary = await _get(jp_fetch, "personalize", "data")
    assert (summary["feedback_accepted"], summary["feedback_rejected"], summary["from_feedback"]) == (1, 1, 1)
    assert (summary["feedback_kept"], summary["feedback_pending"], summary["refusal"]) == (1, 0, "")
    assert summary["estimate"]["steps"] == 120 and summary["estimate"]["text"]  # personalize_steps
    assert summary["train"] == len(alice_dataset.train) + 1

    tab = await Tab.open(jp_ws_fetch)
    before = [await tab.complete(e) for e in heldout]
    assert all(item["adapter"] == "" for item in before)  # nothing published: the base model

    state = await _get(jp_fetch, "personalize")
    assert state["job"] is None and state["adapters"] == [] and state["enabled"]
    code, started = await _post(jp_fetch, "personalize", body={})
    assert code == 202 and started["job"]["state"] == "running", started
    code, error = await _error(_post(jp_fetch, "personalize", body={}))
    assert code == 409 and error["type"] == "job_running"

    done = await tab.until(lambda m: m["job"] and m["job"]["state"] != "running")
    job = done["job"]
    assert job["state"] == "done", job
    phases = [m["job"]["phase"] for m in tab.pushed if m["job"]]
    assert "train" in phases and "judge" in phases and "evaluate" in phases
    report = job["report"]
    # The judge replayed each held-out notebook with its CSVs and helpers.py in forks, on this side.
    assert report["before"]["executable_rate"] is not None and report["after"]["executable_rate"] is not None
    assert report["published"] and report["version"] == "v1", report
    assert report["train_examples"] == len(alice_dataset.train) + 1
    assert [(a["name"], a["current"]) for a in done["adapters"]] == [("personal", "v1")]

    after = [await tab.complete(e) for e in heldout]
    assert all(item["adapter"] == "personal" for item in after)
    base_rate = idiom_rate([i["text"] for i in before], heldout)
    adapter_rate = idiom_rate([i["text"] for i in after], heldout)
    print(f"\nthrough the Jupyter server, greedy on {len(heldout)} held-out cells: idiom rate base {base_rate:.2f}, "
          f"published adapter {adapter_rate:.2f}; executable rate {report['before']['executable_rate']:.2f} -> "
          f"{report['after']['executable_rate']:.2f}; edit similarity {report['before']['edit_similarity']:.3f} -> "
          f"{report['after']['edit_similarity']:.3f}")
    assert adapter_rate >= base_rate + 0.25

    code, error = await _error(_post(jp_fetch, "personalize", "rollback", body={"adapter": "personal"}))
    assert code == 400 and error["type"] == "bad_request" and "first version" in error["message"]
    code, error = await _error(_post(jp_fetch, "personalize", "rollback", body={"adapter": "../../etc"}))
    assert code == 400
    tab.ws.close()
