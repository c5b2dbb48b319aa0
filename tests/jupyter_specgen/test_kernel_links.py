"""Nothing leaks per kernel: a kernel's link (its client, channels, zmq context and threads) goes
when the kernel is shut down through the REST API."""

from __future__ import annotations

import asyncio
import json

import psutil
import pytest


async def _cycle(jp_fetch, service) -> None:
    """Start a kernel, link to it as a completion would, delete it."""
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(reply.body)["id"]
    for _ in range(20):  # the kernel may take a moment to answer
        if await service.kernels.get_specs(kernel_id, names=["x"], budget_ms=200) is not None:
            break
        service.kernels._failed.pop(kernel_id, None)
        await asyncio.sleep(0.5)
    assert kernel_id in service.kernels._links
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    for _ in range(50):
        if kernel_id not in service.kernels._links:
            break
        await asyncio.sleep(0.1)
    assert kernel_id not in service.kernels._links


@pytest.mark.timeout(1500)  # 21 kernel starts: minutes on a loaded machine
async def test_twenty_kernels_started_and_deleted_leave_no_descriptors_or_threads(jp_serverapp, jp_fetch):
    """After one warm-up kernel, 20 more started, linked and deleted bring descriptors and threads back
    to their level after the first."""
    service = jp_serverapp.web_app.settings["specgen"]
    me = psutil.Process()
    await _cycle(jp_fetch, service)
    await asyncio.sleep(1)
    fds, threads = me.num_fds(), me.num_threads()
    for _ in range(20):
        await _cycle(jp_fetch, service)
    for _ in range(50):  # channels and zmq I/O threads end asynchronously
        if me.num_fds() <= fds + 2 and me.num_threads() <= threads:
            break
        await asyncio.sleep(0.2)
    assert me.num_fds() <= fds + 2, (fds, me.num_fds())
    assert me.num_threads() <= threads, (threads, me.num_threads())
