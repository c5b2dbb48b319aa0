"""Two users of one Jupyter server (an identity provider that names them, as JupyterHub's does):
each one's feedback, job steps, adapters and completions stay theirs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from dataclasses import replace

import psutil
import pytest
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import HTTPClientError

from jupyter_specgen.protocol import PROTOCOL_VERSION


class HeaderUsers(IdentityProvider):
    """The user named by the X-Test-User header; no header, no user (403)."""

    def get_user(self, handler):
        name = handler.request.headers.get("X-Test-User")
        return User(username=name) if name else None


@pytest.fixture
def jp_root_dir(tmp_path, alice_root):
    """Alice's notebooks: enough of them that a job learns her idiom and is published (with the
    fewest a job accepts, two, an adapter trained on six cells came out a hair better or worse
    than the base by machine, and the test tested floating point, not who sees what)."""
    root = tmp_path / "root_dir"
    shutil.copytree(alice_root, root)
    return root


@pytest.fixture
def jp_server_config(pandas_base):
    return {
        # XSRF is Jupyter's own business and needs a browser's cookies; these requests come without.
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}, "identity_provider_class": HeaderUsers,
                      "disable_check_xsrf": True},
        "SpecgenExtension": {"model": str(pandas_base.path), "max_tokens": 16, "candidates": 2, "temperature": 0.0,
                             "personalize_steps": 4, "kernel_specs": False},
    }  # fmt: skip


def _as(user: str) -> dict:
    return {"X-Test-User": user}


async def _call(jp_fetch, user, method, *path, body=None):
    """(status, JSON body or the error) of a request made as ``user``."""
    try:
        reply = await jp_fetch("specgen", *path, method=method, headers=_as(user),
                               body=None if body is None else json.dumps(body), allow_nonstandard_methods=True)
    except HTTPClientError as exc:
        body = json.loads(exc.response.body)
        return exc.code, body.get("error", body)  # Jupyter's own refusals (403) have no "error"
    return reply.code, json.loads(reply.body) if reply.body else None


async def _tab(jp_ws_fetch, user):
    ws = await jp_ws_fetch("specgen", "ws", headers=_as(user))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if frame["type"] == "status" and frame["state"] == "ready":
            return ws


async def _drain(ws, seconds=1.0) -> list[dict]:
    """Every frame that arrives within ``seconds`` of quiet."""
    frames = []
    while True:
        try:
            frames.append(json.loads(await asyncio.wait_for(ws.read_message(), seconds)))
        except asyncio.TimeoutError:
            return frames


async def _first_item(ws, id, path):
    ws.write_message(json.dumps({"type": "complete", "version": PROTOCOL_VERSION, "id": id, "path": path,
                                 "cell_id": f"c{id}", "prefix": "sales = ", "cells": [], "active": -1}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if frame.get("reply_to") == id and frame["type"] in ("done", "error"):
            assert frame["type"] == "done", frame
            return frame["items"]


async def test_users_of_one_server_never_see_each_others_feedback_jobs_or_adapters(jp_fetch, jp_ws_fetch, jp_serverapp):
    """Alice's feedback, job pushes, versions and adapter never reach bob; bob cannot roll hers back."""
    service = jp_serverapp.web_app.settings["specgen"]
    # Not what is tested here, and the judge's forks are the slow part of a job. The steps of the
    # backend's own personalization test, so that the adapter learns her idiom.
    service.personalize.settings = replace(service.personalize.settings, judge=False, steps=200)
    report = {"path": "analysis_00_sales.ipynb", "prefix": "# load\n", "suggestion": "sales = zq_tidy(pd.read_csv(\"sales.csv\"))",
              "accepted": True, "key": "alice-1"}
    assert (await _call(jp_fetch, "alice", "POST", "feedback", body=report))[0] == 204
    ran = {"source": report["prefix"] + report["suggestion"], "success": True}  # her cell ran with it: kept
    assert (await _call(jp_fetch, "alice", "POST", "feedback", body={**report, "ran": ran}))[0] == 204
    _, alice_data = await _call(jp_fetch, "alice", "GET", "personalize", "data")
    _, bob_data = await _call(jp_fetch, "bob", "GET", "personalize", "data")
    assert (alice_data["feedback_accepted"], alice_data["from_feedback"]) == (1, 1)
    assert (bob_data["feedback_accepted"], bob_data["from_feedback"]) == (0, 0)
    assert alice_data["train"] == bob_data["train"] + 1  # the one root is shared; the feedback is not

    alice_tab, bob_tab = await _tab(jp_ws_fetch, "alice"), await _tab(jp_ws_fetch, "bob")
    code, started = await _call(jp_fetch, "alice", "POST", "personalize", body={})
    assert code == 202 and started["job"]["user"] == "alice"
    while True:
        frame = json.loads(await asyncio.wait_for(alice_tab.read_message(), 600))
        if frame["type"] == "personalize" and frame["job"]["state"] != "running":
            break
    assert frame["job"]["state"] == "done" and frame["job"]["report"]["published"], json.dumps(frame["job"])[:3000]
    assert frame["job"]["report"]["heldout_examples"] > 0  # measured on the second notebook
    assert [f for f in await _drain(bob_tab) if f["type"] == "personalize"] == []

    _, bob_state = await _call(jp_fetch, "bob", "GET", "personalize")
    assert bob_state["job"] is None and bob_state["adapters"] == []
    _, alice_state = await _call(jp_fetch, "alice", "GET", "personalize")
    assert [(a["name"], a["current"]) for a in alice_state["adapters"]] == [("personal", "v1")]
    assert {i["adapter"] for i in await _first_item(alice_tab, 1, "a.ipynb")} == {"personal"}
    assert {i["adapter"] for i in await _first_item(bob_tab, 1, "a.ipynb")} == {""}

    code, error = await _call(jp_fetch, "bob", "POST", "personalize", "rollback", body={"adapter": "personal"})
    assert code == 400 and "bob" in error["message"]
    assert (await _call(jp_fetch, "bob", "DELETE", "personalize"))[1]["job"] is None  # nothing of his to cancel
    _, alice_state = await _call(jp_fetch, "alice", "GET", "personalize")
    assert alice_state["adapters"][0]["current"] == "v1"
    assert (await _call(jp_fetch, "", "GET", "personalize"))[0] == 403  # no user, no answer
    alice_tab.close()
    bob_tab.close()


async def test_a_backend_killed_mid_job_is_reported_and_takes_its_job_with_it(jp_fetch, jp_ws_fetch, jp_serverapp):
    """SIGKILL of the backend mid-job: the tab is told the job failed, the training process is gone,
    nothing was published, and a new job can start once the backend is back."""
    service = jp_serverapp.web_app.settings["specgen"]
    service.personalize.settings = replace(service.personalize.settings, steps=2000)
    tab = await _tab(jp_ws_fetch, "alice")
    assert (await _call(jp_fetch, "alice", "POST", "personalize", body={}))[0] == 202
    while True:  # training has started: the job's child process exists
        frame = json.loads(await asyncio.wait_for(tab.read_message(), 300))
        if frame["type"] == "personalize" and frame["job"] and frame["job"]["phase"] == "train" and frame["job"]["step"] >= 2:
            break
    backend = psutil.Process(service.process.pid)
    (job,) = [p for p in backend.children() if "specgen_backend.training" in " ".join(p.cmdline())]
    os.kill(backend.pid, signal.SIGKILL)

    while True:
        frame = json.loads(await asyncio.wait_for(tab.read_message(), 300))
        if frame["type"] == "personalize" and frame["job"] and frame["job"]["state"] != "running":
            break
    assert frame["job"]["state"] == "failed" and "restarted" in frame["job"]["error"], frame
    assert frame["adapters"] == []  # nothing was published
    job.wait(10)  # died with its parent (no orphan training on, holding alice's store lock)
    _, state = await _call(jp_fetch, "alice", "GET", "personalize")
    assert state["job"]["state"] == "failed"
    service.personalize.settings = replace(service.personalize.settings, steps=2)
    code, started = await _call(jp_fetch, "alice", "POST", "personalize", body={})
    assert code == 202 and started["job"]["state"] == "running", started
    tab.close()
