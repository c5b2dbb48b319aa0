"""Names at the cursor: latency of each path, end to end through a real kernel (KernelLinks.cursor).

Paths: a name read in the kernel directly (``sales.``, ``sales['un``, ``pd.read_csv(``,
``total = ``), an expression evaluated in a sandboxed fork (``sales.groupby('region').``), and
the next keystroke on that expression, answered from the cache (``sales.groupby('region').a``).
Prints p50/p95 per path and the ratios forked / direct and cached / forked, side by side in one run.

    PYTHONPATH=backend:. python benchmarks/bench_cursor.py [--repeat 30] [--rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.multikernelmanager import AsyncMultiKernelManager

from jupyter_specgen.kernel import autoload
from jupyter_specgen.kernel_client import KernelLinks

DIRECT = ["sales.", "sales['un", "pd.read_csv(", "total = "]
FORKED = "sales.groupby('region')."
CACHED = "sales.groupby('region').a"


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(repeat: int, rows: int) -> None:
    ksm = KernelSpecManager()
    autoload.install(ksm)
    with tempfile.TemporaryDirectory() as tmp:
        mkm = AsyncMultiKernelManager(kernel_spec_manager=ksm, connection_dir=tmp)
        kernel_id = await mkm.start_kernel(kernel_name="python3")
        client = AsyncKernelClient()
        client.load_connection_info(mkm.get_kernel(kernel_id).get_connection_info())
        client.hb_channel.time_to_dead = 10.0
        client.start_channels()
        await client.wait_for_ready(timeout=120)
        links = KernelLinks(mkm, connect_timeout_s=60)
        try:
            setup = ("import numpy as np, pandas as pd\n"
                     f"sales = pd.DataFrame({{'region': np.array(['n', 's'])[np.arange({rows}) % 2],"
                     f" 'units': np.arange({rows}), 'unit_price': np.ones({rows})}})")
            await client.execute_interactive(setup, timeout=120)
            await links.cursor(kernel_id, "sales.")  # connect
            times: dict[str, list[float]] = {}

            async def timed(label: str, before: str) -> None:
                start = time.perf_counter()
                reply = await links.cursor(kernel_id, before, budget_ms=2000)
                assert reply is not None and reply.names, (before, reply)
                times.setdefault(label, []).append((time.perf_counter() - start) * 1000)

            for i in range(repeat):
                for before in DIRECT:
                    await timed("direct", before)
                # a cell run clears the cache: the next request on the expression forks again
                await client.execute_interactive(f"tick = {i}", timeout=60)
                link = await links.link(kernel_id)
                while link.busy:  # its IOPub may lag the reply: a busy kernel is asked on the subshell
                    await asyncio.sleep(0.005)
                await timed("forked", FORKED)
                await timed("cached", CACHED)
            print(f"names at the cursor, {rows} rows, {repeat} rounds (ms, server side, comm round trip included)")
            for label, values in times.items():
                print(f"  {label:7} p50 {statistics.median(values):7.1f}  p95 {_p(values, 0.95):7.1f}  n={len(values)}")
            direct, forked, cached = (statistics.median(times[k]) for k in ("direct", "forked", "cached"))
            print(f"  forked / direct = {forked / direct:.1f}x   cached / forked = {cached / forked:.2f}x")
        finally:
            await links.close()
            client.stop_channels()
            await mkm.shutdown_all(now=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.repeat, args.rows))
