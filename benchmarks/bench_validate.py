"""Validation latency: 1, 4 and 8 candidates on kernels holding 10 MB and 1 GB, with and without the OS fence.

Measured end to end from the server side (KernelLinks.validate: comm round trip, fork, fence,
run, report), median and p95 per row; the kernel-side time of the slowest child (fork to
report, ``Verdict.elapsed_ms``) beside it. "OS fence off" runs the same children with only the
audit hook and the limits (the weak fence of issue 12): the difference is what seccomp,
Landlock and no_new_privs cost. That switch is flipped inside the benchmark's own kernel
(``forking._OS_FENCE_FOR_BENCHMARK_ONLY``); it is no setting.

Goal (issue 12): 4 candidates within 2x one candidate's time on a machine with >= 4 cores (fork
from one prepared point, no filter compiled per child); the ratio is printed for this machine.

    PYTHONPATH=backend:. python benchmarks/bench_validate.py [--repeat 20] [--sizes 10,1000] [--big-repeat 5]
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
COUNTS = (1, 4, 8)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


async def bench(size_mb: int, repeat: int) -> list[tuple]:
    """Rows (size, fence, count, median ms, p95 ms, kernel-side median ms) for one kernel."""
    ksm = KernelSpecManager()
    autoload.install(ksm)
    mkm = AsyncMultiKernelManager(kernel_spec_manager=ksm, connection_dir=tempfile.gettempdir())
    kernel_id = await mkm.start_kernel(kernel_name="python3")
    client = AsyncKernelClient()
    client.load_connection_info(mkm.get_kernel(kernel_id).get_connection_info())
    client.hb_channel.time_to_dead = 10.0  # a loaded machine is not a dead kernel
    client.start_channels()
    rows = []
    try:
        await client.wait_for_ready(timeout=120)
        n = size_mb * (1 << 20) // 16  # two 8-byte columns
        reply = await client.execute_interactive(
            "import numpy as np, pandas as pd\n"
            f"df = pd.DataFrame({{'a': np.arange({n}), 'b': np.ones({n})}})\n", timeout=600)
        assert reply["content"]["status"] == "ok", reply["content"]
        links = KernelLinks(mkm, connect_timeout_s=60)
        await links.validate(kernel_id, CANDIDATES[:1], timeout_ms=10000)  # connect; the fence is compiled here
        for fence in (True, False):
            reply = await client.execute_interactive(
                f"import jupyter_specgen.kernel.forking as _f; _f._OS_FENCE_FOR_BENCHMARK_ONLY = {fence}", timeout=60)
            assert reply["content"]["status"] == "ok", reply["content"]
            for count in COUNTS:
                ends, kernel_side = [], []
                for _ in range(repeat):
                    start = time.perf_counter()
                    verdicts = await links.validate(kernel_id, CANDIDATES[:count], timeout_ms=10000)
                    ends.append((time.perf_counter() - start) * 1000)
                    kernel_side.append(max(v.elapsed_ms for v in verdicts))
                    assert all(v.status == "ran" for v in verdicts), verdicts
                rows.append((size_mb, fence, count, statistics.median(ends), p95(ends), statistics.median(kernel_side)))
        await links.close()
    finally:
        client.stop_channels()
        await mkm.shutdown_all(now=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="runs per row on the small namespace")
    parser.add_argument("--big-repeat", type=int, default=5, help="runs per row on namespaces of 1 GB and more")
    parser.add_argument("--sizes", default="10,1000", help="namespace sizes in MB, comma-separated")
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows += asyncio.run(bench(size, args.big_repeat if size >= 1000 else args.repeat))
    print(f"CPU cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; "
          "goal: 4 candidates <= 2x one candidate (on >= 4 cores)")
    print(f"{'namespace':>9}  {'OS fence':>8}  {'candidates':>10}  {'median ms':>9}  {'p95 ms':>7}  "
          f"{'kernel-side ms':>14}  {'x one':>5}")
    base = {(r[0], r[1]): r[3] for r in rows if r[2] == 1}
    for size, fence, count, median, high, kernel in rows:
        print(f"{size:>6} MB  {'on' if fence else 'off':>8}  {count:>10}  {median:9.1f}  {high:7.1f}  {kernel:14.1f}  "
              f"{median / base[(size, fence)]:5.2f}")
    for size in sorted({r[0] for r in rows}):
        for count in COUNTS:
            on = next(r[3] for r in rows if r[:3] == (size, True, count))
            off = next(r[3] for r in rows if r[:3] == (size, False, count))
            print(f"{size:>6} MB, {count} candidates: the OS fence costs {on - off:+.1f} ms ({on / off:.2f}x)")


if __name__ == "__main__":
    main()
