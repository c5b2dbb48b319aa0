"""Validation latency: one candidate, and 8 in parallel, on kernels holding 10 MB and 1 GB.

Goal (issue #4): <= 15 ms median per candidate, <= 40 ms for 8 in parallel, measured end to end
from the server side (KernelLinks.validate: comm round trip, fork, run, report). The kernel-side
time (fork to report, ``Verdict.elapsed_ms``) is printed beside it.

    PYTHONPATH=backend:. python benchmarks/bench_validate.py [--repeat 20] [--sizes 10,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.multikernelmanager import AsyncMultiKernelManager

from jupyter_specgen.kernel import autoload
from jupyter_specgen.kernel_client import KernelLinks

# Cheap candidates: the benchmark measures the cost of validating, not of the user's pandas work.
CANDIDATES = [
    "df.iloc[:100]['a'].sum()", "df.shape", "df.head(2)", "df.dtypes",
    "xs = [1, 2, 3]\nlen(xs)", "len(df)", "df.iloc[5]", "list(df.columns)",
]


async def bench(size_mb: int, repeat: int) -> None:
    ksm = KernelSpecManager()
    autoload.install(ksm)
    mkm = AsyncMultiKernelManager(kernel_spec_manager=ksm, connection_dir=tempfile.gettempdir())
    kernel_id = await mkm.start_kernel(kernel_name="python3")
    client = AsyncKernelClient()
    client.load_connection_info(mkm.get_kernel(kernel_id).get_connection_info())
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        rows = size_mb * (1 << 20) // 16  # two 8-byte columns
        reply = await client.execute_interactive(
            "import numpy as np, pandas as pd\n"
            f"df = pd.DataFrame({{'a': np.arange({rows}), 'b': np.ones({rows})}})\n", timeout=300)
        assert reply["content"]["status"] == "ok", reply["content"]
        links = KernelLinks(mkm, connect_timeout_s=30)
        await links.validate(kernel_id, CANDIDATES[:1])  # connect, warm up
        one, one_kernel, eight, eight_kernel = [], [], [], []
        for _ in range(repeat):
            start = time.perf_counter()
            (v,) = await links.validate(kernel_id, CANDIDATES[:1])
            one.append((time.perf_counter() - start) * 1000)
            one_kernel.append(v.elapsed_ms)
            assert v.status == "ran", v
        for _ in range(repeat):
            start = time.perf_counter()
            verdicts = await links.validate(kernel_id, CANDIDATES)
            eight.append((time.perf_counter() - start) * 1000)
            eight_kernel.append(max(v.elapsed_ms for v in verdicts))
            assert all(v.status == "ran" for v in verdicts), verdicts
        print(f"{size_mb:>5} MB  1 candidate : median {statistics.median(one):6.1f} ms  "
              f"(p90 {sorted(one)[int(0.9 * len(one)) - 1]:6.1f})  kernel-side median {statistics.median(one_kernel):6.1f} ms")
        print(f"{size_mb:>5} MB  8 parallel  : median {statistics.median(eight):6.1f} ms  "
              f"(p90 {sorted(eight)[int(0.9 * len(eight)) - 1]:6.1f})  kernel-side slowest-child median "
              f"{statistics.median(eight_kernel):6.1f} ms")
        await links.close()
    finally:
        client.stop_channels()
        await mkm.shutdown_all(now=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--sizes", default="10,1000", help="namespace sizes in MB, comma-separated")
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}; goal: <= 15 ms per candidate, <= 40 ms for 8")
    for size in (int(s) for s in args.sizes.split(",")):
        asyncio.run(bench(size, args.repeat))


if __name__ == "__main__":
    main()
