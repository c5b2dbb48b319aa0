"""A real ipykernel, started the way the server starts them (kernel spec + autoload), shared per module."""

from __future__ import annotations

import pytest_asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.multikernelmanager import AsyncMultiKernelManager

from jupyter_specgen.kernel import autoload


class Kernel:
    """A started kernel: its manager, its id, and a client for running the user's cells."""

    def __init__(self, mkm, kernel_id, client):
        self.mkm = mkm
        self.kernel_id = kernel_id
        self.client = client

    async def run(self, code: str, *, timeout: float = 60) -> dict:
        """Run a cell as the user would; return the reply content; fail on error."""
        outputs: list = []
        reply = await self.client.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", (code, reply["content"])
        return {"reply": reply["content"], "outputs": outputs}

    async def eval(self, expr: str):
        """The value of ``expr`` in the kernel, through repr/literal_eval."""
        import ast

        res = await self.run(f"print(repr({expr}))")
        text = "".join(o["content"].get("text", "") for o in res["outputs"] if o["header"]["msg_type"] == "stream")
        return ast.literal_eval(text.strip())


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kernel(tmp_path_factory):
    ksm = KernelSpecManager()
    autoload.install(ksm)
    # connection_dir: the default is the working directory, which would collect connection files
    mkm = AsyncMultiKernelManager(kernel_spec_manager=ksm, connection_dir=str(tmp_path_factory.mktemp("kernels")))
    kernel_id = await mkm.start_kernel(kernel_name="python3")
    km = mkm.get_kernel(kernel_id)
    client = AsyncKernelClient()
    client.load_connection_info(km.get_connection_info())
    # The heartbeat's default 1 s reads a kernel slowed by a loaded machine as dead.
    client.hb_channel.time_to_dead = 10.0
    client.start_channels()
    await client.wait_for_ready(timeout=60)
    try:
        yield Kernel(mkm, kernel_id, client)
    finally:
        client.stop_channels()
        await mkm.shutdown_all(now=True)
