"""Time to the first validated ghost text while typing, on one small notebook, embedded model.

A fresh ``jupyter server`` with the extension (its own child backend with the default model), one
kernel that ran the notebook's setup cell, then a user typing: each keystroke of a few lines is a
``complete`` request (the previous one cancelled, as the browser does) and the time from sending
it to the first ``shown`` frame whose item was validated ("ran", "incomplete" or "defined") is
taken. "cold": the first keystroke of each line (a new cell text; the prompt prefix cache has the
notebook above but not this line); "warm": the keystrokes after it on the same line. Keystrokes
with nothing shown count as such, not as a time. Printed: p50/p95 per group, the share shown, and
the time to ``done`` beside it.

    PYTHONPATH=backend:. python benchmarks/bench_first_shown.py [--lines 4] [--chars 8]

Issue 17's goal on 2 cores: p50 <= 300 ms, p95 <= 600 ms after the debounce (the browser's debounce
is not part of these times). Measured here on whatever the machine is doing: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import Kernel, Server, _pct, _request  # noqa: E402  (same folder, a script)

from jupyter_specgen.protocol import PROTOCOL_VERSION  # noqa: E402

__all__ = ["main"]

log = logging.getLogger(__name__)

SETUP = ("import pandas as pd\n"
         "sales = pd.DataFrame({'region': ['n', 's', 'n'], 'units': [3, 4, 5], 'price': [1.5, 2.0, 2.5]})")
# What the user types, one line per cell; each prefix of each line is one keystroke.
LINES = [
    "total = sales['units'].sum()",
    "by_region = sales.groupby('region')['units'].mean()",
    "sales['revenue'] = sales['units'] * sales['price']",
    "top = sales.sort_values('units').head(2)",
    "n = len(sales)",
]
VALIDATED = ("ran", "incomplete", "defined")


async def run(lines: list[str], chars: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="specgen-first-shown-"))
    server = Server(root, [])
    await server.start()
    kernel = Kernel(server)
    try:
        await kernel.start()
        content = await kernel.execute(SETUP)
        assert content["status"] == "ok", content
        url = f"ws://127.0.0.1:{server.port}/specgen/ws?token={server.token}"
        groups: dict[str, list] = {"cold": [], "warm": []}
        done_ms: dict[str, list] = {"cold": [], "warm": []}
        stage_ms: dict[str, dict[str, list]] = {"cold": {}, "warm": {}}  # when each stage began
        async with connect(url, max_size=None) as ws:
            while json.loads(await asyncio.wait_for(ws.recv(), 300)).get("state") != "ready":
                pass
            request_id = 0
            for line_no, line in enumerate(lines):
                start = max(1, len(line) - chars)  # the last ``chars`` keystrokes of the line
                for k, end in enumerate(range(start, len(line) + 1)):
                    request_id += 1
                    prefix = line[:end]
                    frame = {
                        "type": "complete", "version": PROTOCOL_VERSION, "id": request_id, "path": "bench.ipynb",
                        "cell_id": f"cell-{line_no}", "prefix": prefix, "suffix": "", "active": 1,
                        "cells": [{"cell_type": "code", "source": SETUP}, {"cell_type": "code", "source": prefix}],
                        "kernel_id": kernel.id,
                    }  # fmt: skip
                    reply = await _request(ws, frame)
                    group = "cold" if k == 0 else "warm"
                    # With a kernel, one request's items are all validated or none is (kernel busy).
                    validated = any(item["verdict"] in VALIDATED for item in reply["shown"])
                    groups[group].append(reply["first_shown_ms"] if validated else None)
                    if reply["final_ms"] is not None:
                        done_ms[group].append(reply["final_ms"])
                    for stage, ms in reply["stage_ms"].items():
                        stage_ms[group].setdefault(stage, []).append(ms)
        return {"groups": groups, "done": done_ms, "stages": stage_ms}
    finally:
        await kernel.stop()
        await server.stop()


def _fmt(values: list, what: str = "shown") -> str:
    times = [v for v in values if v is not None]
    if not times:
        return f"nothing {what} in {len(values)} keystrokes"
    return (f"p50 {statistics.median(times):6.0f} ms  p95 {_pct(times, 95):6.0f} ms  "
            f"{what} {len(times)}/{len(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=len(LINES), help="lines typed (one cell each)")
    parser.add_argument("--chars", type=int, default=8, help="keystrokes timed at the end of each line")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run(LINES[: args.lines], args.chars))
    for group in ("cold", "warm"):
        sys.stdout.write(f"first validated ghost text, {group}: {_fmt(result['groups'][group])};  "
                         f"done: {_fmt(result['done'][group], 'answered')}\n")
        began = ", ".join(f"{stage} {statistics.median(ms):.0f}" for stage, ms in result["stages"][group].items())
        sys.stdout.write(f"  stages began (p50 ms after sending): {began}\n")


if __name__ == "__main__":
    main()
