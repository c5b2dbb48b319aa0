"""Each setting acts alone: validation runs exactly when ``validate`` is on, whether ``kernel_specs``
is on or off, and every "not validated" says why."""

from __future__ import annotations

import asyncio
import json

import pytest

from .test_completions import _complete, _final, _open

COMBINATIONS = [(v, k) for v in (True, False) for k in (True, False)]


@pytest.fixture(params=COMBINATIONS, ids=[f"validate={v}-kernel_specs={k}" for v, k in COMBINATIONS])
def jp_server_config(request, tiny_model):
    validate, kernel_specs = request.param
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
        "SpecgenExtension": {"model": tiny_model, "max_tokens": 8, "candidates": 3, "temperature": 1.0,
                             "validate": validate, "kernel_specs": kernel_specs},
    }


async def test_validation_runs_exactly_when_validate_is_on(jp_serverapp, jp_fetch, jp_ws_fetch, jp_server_config):
    """With a live kernel: validate on → candidates are run (no item says validation or the kernel
    extension is off); validate off → every item is "not validated" because validation is off."""
    validate = jp_server_config["SpecgenExtension"]["validate"]
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(reply.body)["id"]
    ws, _ = await _open(jp_ws_fetch)
    answers = []
    for id in (1, 2):  # the first may find the kernel still starting
        ws.write_message(_complete(id, prefix="x = 1\ny = ", kernel_id=kernel_id))
        answers.append((await _final(ws, id))[-1])
        await asyncio.sleep(1)
    done = answers[-1]
    assert done["type"] == "done", done
    details = [i["detail"] for i in done["items"]]
    assert all(d for i, d in zip(done["items"], details) if i["verdict"] == "not_validated"), done  # a reason, always
    off = [d for d in details if "validation is off" in d or "kernel extension is off" in d]
    if validate:
        assert off == [] and "validation is off" not in done["summary"], done
        assert not all("not validated: no kernel" in d or "cannot be reached" in d for d in details) or not details
    else:
        assert all(i["verdict"] == "not_validated" and "validation is off" in i["detail"] for i in done["items"]), done
    ws.close()
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
