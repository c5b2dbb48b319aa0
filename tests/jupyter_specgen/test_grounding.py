"""Completions grounded in a live kernel started by the Jupyter server: specs in the prompt,
candidates validated in a fork and carrying their verdict to the browser."""

from __future__ import annotations

import asyncio
import json

from jupyter_client.asynchronous import AsyncKernelClient

from jupyter_specgen.completions.context import ground
from jupyter_specgen.protocol import PROTOCOL_VERSION, Cell, Complete


async def _kernel_with_frame(jp_fetch, jp_serverapp) -> str:
    """Start a kernel through the REST API (so the server's autoload applies) and define a frame."""
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(reply.body)["id"]
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = AsyncKernelClient()
    client.load_connection_info(km.get_connection_info(session=False))
    client.hb_channel.time_to_dead = 10.0  # a kernel still importing on a loaded machine is not dead
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=120)
        code = "import pandas as pd\nsales = pd.DataFrame({'price': [1.5, 2.0], 'units': [3, 4]})"
        reply = await client.execute_interactive(code, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
    return kernel_id


async def test_prompt_carries_the_kernels_dataframe_schema(jp_fetch, jp_serverapp):
    """The context sent to the model holds the live frame's columns and dtypes."""
    kernel_id = await _kernel_with_frame(jp_fetch, jp_serverapp)
    service = jp_serverapp.web_app.settings["specgen"]
    cells = [Cell("code", "sales = load()"), Cell("code", "")]
    request = Complete(id=1, path="a.ipynb", cell_id="c", prefix="sales.", cells=cells, active=1, kernel_id=kernel_id)
    grounding = await ground(request, service.kernels, kernel_id, kernel_specs=True, constrain=False, budget_ms=2000)
    context = grounding.context
    assert "price" in context.preamble and "float64" in context.preamble, context.preamble
    assert "units" in context.cells[0].source  # the schema comes after the defining cell


async def test_items_carry_validation_verdicts(jp_fetch, jp_ws_fetch, jp_serverapp):
    """With a kernel, the real model's items all held up in a fork; none is unvalidated, none raised."""
    kernel_id = await _kernel_with_frame(jp_fetch, jp_serverapp)
    ws = await jp_ws_fetch("specgen", "ws")
    while json.loads(await asyncio.wait_for(ws.read_message(), 120))["state"] != "ready":
        pass
    frame = {
        "type": "complete", "version": PROTOCOL_VERSION, "id": 1, "path": "a.ipynb", "cell_id": "c",
        "prefix": "total = sales.", "suffix": "", "cells": [{"cell_type": "code", "source": ""}], "active": 0,
        "kernel_id": kernel_id,
    }  # fmt: skip
    ws.write_message(json.dumps(frame))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if reply.get("reply_to") == 1 and reply["type"] in ("done", "error"):
            break
    assert reply["type"] == "done", reply
    assert reply["items"] or reply["summary"].startswith("no suggestion: "), reply
    assert {item["verdict"] for item in reply["items"]} <= {"ran", "incomplete", "defined"}, reply["items"]
    ws.close()


async def test_the_next_keystroke_does_not_ask_the_kernel_for_specs_again(jp_fetch, jp_serverapp):
    """Specs are cached per kernel until a cell runs: typing on in the same names sends no specs request."""
    kernel_id = await _kernel_with_frame(jp_fetch, jp_serverapp)
    kernels = jp_serverapp.web_app.settings["specgen"].kernels
    cells = [Cell("code", "sales = load()"), Cell("code", "")]

    def request(prefix: str) -> Complete:
        return Complete(id=1, path="a.ipynb", cell_id="c", prefix=prefix, cells=cells, active=1, kernel_id=kernel_id)

    first = await ground(request("sales."), kernels, kernel_id, kernel_specs=True, constrain=False, budget_ms=2000)
    assert "units" in first.context.preamble
    link = await kernels.link(kernel_id)
    sent = []
    send = link._send_shell

    def spy(msg_type, content, **kw):  # counts what goes to the kernel, sends it all the same
        sent.append((content.get("data") or {}).get("type"))
        return send(msg_type, content, **kw)

    link._send_shell = spy
    again = await ground(request("sales.un"), kernels, kernel_id, kernel_specs=True, constrain=False, budget_ms=2000)
    assert again.context.preamble == first.context.preamble
    assert "specs" not in sent, sent
