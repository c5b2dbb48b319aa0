"""Prefix caching: time to first token for "the same notebook, one more keystroke", cache on vs off.

A user types a line at the end of a notebook (a few hundred lines above the cursor, a few below),
one character per request, as ghost text is asked for at each keystroke. Two backends on the
same model serve the same keystrokes, alternately (so that both see the same machine load): one
with the prefix cache, one without. Prints p50/p95 time to first token (first streamed text, or
the first candidate's end when a candidate streams nothing) and to the result, as seen by the
client, the ratios off / on, and what the cache saved (prompt tokens prefilled per request).

    python benchmarks/bench_prefix.py [--model DIR] [--keystrokes 40] [--n 4] [--new-tokens 16] [--repeat 1]

With ``--repeat 4`` the notebook is longer than the prompt budget, so its start is cut; the cut
moves by a line now and then as the user types, and those keystrokes miss the cache.

Without ``--model`` the embedded model is used (the default of ``specgen-backend serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

try:
    import specgen_backend  # noqa: F401
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

from specgen_backend.protocol import PROTOCOL_VERSION
from specgen_backend.server import Backend, BackendConfig
from websockets.asyncio.client import connect

__all__ = ["main"]

TOKEN = "bench"

# A notebook of the usual kind: imports, a frame, helpers, a loop, a plot; the cursor in a new
# cell near the end, one more cell below it.
CELLS = [
    ("markdown", "# Monthly sales\nLoad the sales export, clean it, and look at units and revenue by region and month."),
    ("code", "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\n\npd.set_option('display.max_columns', 20)\n"),
    ("code", "rng = np.random.default_rng(0)\nmonths = pd.date_range('2024-01-01', periods=24, freq='MS')\n"
             "regions = ['north', 'south', 'east', 'west']\n"
             "sales = pd.DataFrame({\n    'month': np.repeat(months, len(regions)),\n    'region': regions * len(months),\n"
             "    'units': rng.integers(10, 200, size=len(months) * len(regions)),\n"
             "    'price': rng.uniform(5.0, 20.0, size=len(months) * len(regions)).round(2),\n})\nsales.head()\n"),
    ("markdown", "## Cleaning\nDrop duplicated rows, fill missing prices with the regional median."),
    ("code", "def clean(frame: pd.DataFrame) -> pd.DataFrame:\n    frame = frame.drop_duplicates()\n"
             "    medians = frame.groupby('region')['price'].transform('median')\n"
             "    frame['price'] = frame['price'].fillna(medians)\n    frame['revenue'] = frame['units'] * frame['price']\n"
             "    return frame\n\nsales = clean(sales)\n"),
    ("code", "def summarize(frame, column):\n    total = frame[column].sum()\n    mean = frame[column].mean()\n"
             "    top = frame.nlargest(3, column)[['month', 'region', column]]\n"
             "    return {'total': total, 'mean': mean, 'top': top}\n\n"
             "for name, group in sales.groupby('region'):\n    print(name, summarize(group, 'units')['total'])\n"),
    ("markdown", "## By month\nRevenue per month and region, as a table and as a chart."),
    ("code", "monthly = sales.pivot_table(index='month', columns='region', values='revenue', aggfunc='sum')\n"
             "monthly['total'] = monthly.sum(axis=1)\nmonthly.tail()\n"),
    ("code", "fig, ax = plt.subplots(figsize=(10, 4))\nmonthly.drop(columns='total').plot(ax=ax)\n"
             "ax.set_ylabel('revenue')\nax.set_title('Revenue by region')\nplt.show()\n"),
    ("code", "growth = monthly['total'].pct_change().dropna()\nbest = growth.idxmax()\n"
             "print(f'best month: {best:%Y-%m} ({growth.max():.1%})')\n"),
]
TYPED = "share = monthly.drop(columns='total').div(monthly['total'], axis=0).round(3)"
BELOW = [("code", "share.plot.area(figsize=(10, 4))\nplt.show()\n")]


REPEAT = 1  # --repeat: the notebook's cells this many times over (longer than the prompt budget: cut)


def context(typed: str) -> dict:
    above = [{"cell_type": t, "source": s} for t, s in CELLS] * REPEAT
    cells = above + [{"cell_type": "code", "source": ""}] + [{"cell_type": t, "source": s} for t, s in BELOW]
    return {"prefix": typed, "suffix": "", "cells": cells, "active": len(above)}


async def keystroke(ws, rid: str, typed: str, args) -> tuple[float, float]:
    """(seconds to the first token, seconds to the result) of one request."""
    body = {"type": "generate", "version": PROTOCOL_VERSION, "id": rid, "user": "alice", "context": context(typed),
            "n": args.n, "max_tokens": args.new_tokens, "temperature": 0.8}  # fmt: skip
    start = time.perf_counter()
    await ws.send(json.dumps(body))
    first = None
    while True:
        msg = json.loads(await ws.recv())
        if msg.get("reply_to") != rid:
            continue
        if msg["type"] in ("token", "candidate_end") and first is None:
            first = time.perf_counter() - start
        if msg["type"] in ("result", "error"):
            assert msg["type"] == "result", msg
            done = time.perf_counter() - start
            return (first if first is not None else done), done


async def ready(backend: Backend):
    ws = await connect(backend.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=None)
    while json.loads(await ws.recv())["state"] != "ready":
        pass
    return ws


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the embedded model)")
    parser.add_argument("--keystrokes", type=int, default=40, help="characters typed, one request each")
    parser.add_argument("--n", type=int, default=4, help="candidates per request")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1, help="the notebook's cells this many times over (4: cut to the budget)")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat
    model = args.model
    if model is None:
        from specgen_backend.models import default_model_path

        model = str(default_model_path())
    on = Backend(BackendConfig(model=model, token=TOKEN))
    off = Backend(BackendConfig(model=model, token=TOKEN, prefix_cache_mb=0))
    sockets = {}
    try:
        for backend in (on, off):  # one after the other: two first imports of transformers in two threads race
            await backend.start()
            sockets[backend] = await ready(backend)
        for backend, ws in sockets.items():  # warm-up: first forwards, the token table, allocations
            await keystroke(ws, "warm", "x = 1", args)
        start = len(TYPED) - args.keystrokes if args.keystrokes < len(TYPED) else 1
        times: dict[Backend, list[tuple[float, float]]] = {on: [], off: []}
        before = {b: (b.metrics.prefill_tokens._value.get(), b.metrics.prefix_reused_tokens._value.get()) for b in (on, off)}
        for k in range(args.keystrokes):
            typed = TYPED[: start + k] if start + k <= len(TYPED) else TYPED + "x" * (start + k - len(TYPED))
            for backend in ((on, off) if k % 2 == 0 else (off, on)):
                times[backend].append(await keystroke(sockets[backend], f"k{k}", typed, args))
        prompt_tokens = len(on._scheduler.engine.prepare(_request(context(TYPED))).ids)
        import torch

        device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
        print(f"model: {Path(model).name}; device: {device}; {args.keystrokes} keystrokes, n={args.n}, "
              f"{args.new_tokens} new tokens; prompt {prompt_tokens} tokens (notebook x{args.repeat})")  # fmt: skip
        print(f"{'prefix cache':>12} | {'TTFT p50 (ms)':>13} {'TTFT p95 (ms)':>13} | {'result p50 (ms)':>15} {'result p95 (ms)':>15} | prefilled tokens/request")
        rows = {}
        for label, backend in (("on", on), ("off", off)):
            ttft, total = [t for t, _ in times[backend]], [d for _, d in times[backend]]
            prefilled = (backend.metrics.prefill_tokens._value.get() - before[backend][0]) / args.keystrokes
            rows[label] = (pct(ttft, 0.5), pct(ttft, 0.95), pct(total, 0.5), pct(total, 0.95))
            print(f"{label:>12} | {rows[label][0] * 1e3:>13.1f} {rows[label][1] * 1e3:>13.1f} | "
                  f"{rows[label][2] * 1e3:>15.1f} {rows[label][3] * 1e3:>15.1f} | {prefilled:.0f}")  # fmt: skip
        ratio = [a / b for a, b in zip(rows["off"], rows["on"])]
        print(f"{'off / on':>12} | {ratio[0]:>12.2f}x {ratio[1]:>12.2f}x | {ratio[2]:>14.2f}x {ratio[3]:>14.2f}x |")
        hits = on.metrics.prefix_hits._value.get()
        print(f"cache: {hits:.0f} hits, {on.metrics.prefix_reused_tokens._value.get() - before[on][1]:.0f} prompt tokens reused, "
              f"{on._scheduler.prefix_cache.nbytes / 2**20:.1f} MiB held in {len(on._scheduler.prefix_cache)} entries")  # fmt: skip
        for ws in sockets.values():
            await ws.close()
    finally:
        await on.close()
        await off.close()


def _request(ctx: dict):
    from specgen_backend.codec import build
    from specgen_backend.protocol import Generate

    return build(Generate, {"id": 0, "user": "alice", "context": ctx}, path="generate")


if __name__ == "__main__":
    asyncio.run(main())
