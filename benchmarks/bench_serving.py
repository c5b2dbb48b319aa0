"""Continuous batching versus one request at a time, with 1, 8 and 32 concurrent users.

Each user has their own LoRA adapter (PEFT, rank 8, made on the spot) and sends ``--requests``
greedy completions one after another (a closed loop, like a typist waiting for ghost text), each
of ``--new-tokens`` tokens. The same backend code serves both modes; "one at a time" is the
scheduler with ``max_batch=1``. Prints throughput (generated tokens/s) and p50/p95 time to first
token as seen by the client, and the ratios batched / one-at-a-time, side by side in one run.

    python benchmarks/bench_serving.py [--model DIR] [--users 1 8 32] [--requests 3] [--new-tokens 16]
    python benchmarks/bench_serving.py --engine native vllm ...   # the native engine and vLLM side by side

With ``--engine native vllm`` each engine serves the same users and adapters with batching on, and
the table shows both (vLLM: a ``vllm serve`` started once from scripts/vllm_env.sh's venv or
$SPECGEN_VLLM_PYTHON, docs/serving.md).

Without ``--model`` a tiny random-weight model is built (CPU figures then say little about a
GPU; they show the scheduling effect only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    import specgen_backend  # noqa: F401
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

from specgen_backend.protocol import PROTOCOL_VERSION
from specgen_backend.server import Backend, BackendConfig
from websockets.asyncio.client import connect

TOKEN = "bench"
PREFIXES = ["def add(a, b):\n    return", "import numpy as np\nx = np.", "for i in range(", "df = pd.read_csv(", "print(", "class Foo:\n    def"]


def make_adapters(model: str, root: Path, users: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    seeds = []
    for k in range(min(users, 4)):
        torch.manual_seed(k)
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model), LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        seeds.append(root / f"seed{k}")
        peft_model.save_pretrained(str(seeds[-1]))
    for i in range(users):
        shutil.copytree(seeds[i % len(seeds)], root / f"user{i}" / "a")


async def user(url: str, i: int, requests: int, new_tokens: int, ttft: list) -> None:
    async with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=None) as ws:
        while json.loads(await ws.recv())["state"] != "ready":
            pass
        await ws.send(json.dumps({"type": "adapter_load", "version": PROTOCOL_VERSION, "id": "l", "user": f"user{i}", "name": "a", "path": "a"}))
        assert json.loads(await ws.recv())["type"] == "adapters"
        for r in range(requests):
            body = {"type": "generate", "version": PROTOCOL_VERSION, "id": r, "user": f"user{i}", "adapters": ["a"],
                    "context": {"prefix": PREFIXES[(i + r) % len(PREFIXES)]}, "max_tokens": new_tokens, "stop": ["\u2603"]}  # fmt: skip
            start = time.perf_counter()
            await ws.send(json.dumps(body))
            first = None
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] == "token" and first is None:
                    first = time.perf_counter() - start
                if msg["type"] in ("result", "error"):
                    assert msg["type"] == "result", msg
                    break
            ttft.append(first if first is not None else time.perf_counter() - start)


async def measure(model: str, root: Path, users: int, max_batch: int, args, vllm_url=None) -> dict:
    engine = {"serving_engine": "vllm", "vllm_url": vllm_url} if vllm_url else {}
    backend = Backend(BackendConfig(model=model, token=TOKEN, adapter_root=str(root), max_adapters=max(users, 1), max_batch=max_batch,
                                    max_queue=256, **engine))  # fmt: skip
    await backend.start()
    try:
        await user(backend.url, 0, 2, 4, [])  # warm-up: model loaded, adapter slots allocated, first forwards done
        tokens_before = backend.metrics.tokens._value.get()
        ttft: list = []
        start = time.perf_counter()
        await asyncio.gather(*(user(backend.url, i, args.requests, args.new_tokens, ttft) for i in range(users)))
        elapsed = time.perf_counter() - start
        tokens = backend.metrics.tokens._value.get() - tokens_before
    finally:
        await backend.close()
    ttft.sort()
    return {"tok_s": tokens / elapsed, "p50": statistics.median(ttft), "p95": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: build a tiny random model)")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=3, help="requests per user, sent one after another")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--engine", nargs="+", choices=["native", "vllm"], default=None,
                        help="engines to compare, batched (default: the native engine batched vs one at a time)")
    args = parser.parse_args()
    if args.engine:
        await compare(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from specgen_backend.tiny import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "model"))
        root = Path(tmp) / "adapters"
        make_adapters(model, root, max(args.users))
        import torch

        device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
        print(f"device: {device}; {args.requests} requests/user, {args.new_tokens} new tokens, n=1, one adapter per user")
        print(f"{'users':>5} | {'batched tok/s':>13} {'serial tok/s':>12} {'ratio':>6} | {'TTFT p50 b/s (ms)':>18} {'ratio':>6} | {'TTFT p95 b/s (ms)':>18} {'ratio':>6}")
        for users in args.users:
            batched = await measure(model, root, users, max_batch=64, args=args)
            serial = await measure(model, root, users, max_batch=1, args=args)
            print(f"{users:>5} | {batched['tok_s']:>13.0f} {serial['tok_s']:>12.0f} {batched['tok_s'] / serial['tok_s']:>5.2f}x | "
                  f"{batched['p50'] * 1e3:>8.1f}/{serial['p50'] * 1e3:<9.1f} {batched['p50'] / serial['p50']:>5.2f}x | "
                  f"{batched['p95'] * 1e3:>8.1f}/{serial['p95'] * 1e3:<9.1f} {batched['p95'] / serial['p95']:>5.2f}x", flush=True)  # fmt: skip


async def compare(args) -> None:
    """Throughput and TTFT of each engine in ``args.engine``, batched, side by side.

    One engine at a time: the native engine is measured before vLLM starts and vLLM after it, so
    that neither shares the CPU with the other's idle process; the table comes at the end."""
    from specgen_backend.engines.vllm_client import VllmServer, VllmServerConfig
    from specgen_backend.tiny import TinyModelConfig, build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        # vLLM's CPU attention has no kernel for the default tiny model's head_dim 16: 2 heads of 32.
        model = args.model or str(build_tiny_model(Path(tmp) / "model", TinyModelConfig(num_attention_heads=2, num_key_value_heads=1)))
        root = Path(tmp) / "adapters"
        make_adapters(model, root, max(args.users))
        results: dict[tuple[str, int], dict] = {}
        for engine in args.engine:
            server = None
            if engine == "vllm":
                import socket

                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                server = VllmServer(VllmServerConfig(model=model, port=port, max_loras=max(args.users), max_lora_rank=8,
                                                     max_model_len=2048, dtype="float32", log_path=str(Path(tmp) / "vllm.log")))  # fmt: skip
                server.start()
                await asyncio.get_running_loop().run_in_executor(None, server.wait_ready, 900.0)
            try:
                for users in args.users:
                    results[engine, users] = await measure(model, root, users, max_batch=64, args=args,
                                                           vllm_url=server.url if server is not None else None)  # fmt: skip
                    print(f"  measured {engine} with {users} users", file=sys.stderr, flush=True)
            finally:
                if server is not None:
                    server.stop()
        print(f"{args.requests} requests/user, {args.new_tokens} new tokens, n=1, one adapter per user, batched")
        print(f"{'users':>5} | " + " | ".join(f"{e + ' tok/s':>12} {'TTFT p50/p95 (ms)':>18}" for e in args.engine))
        for users in args.users:
            cells = [f"{results[e, users]['tok_s']:>12.0f} {results[e, users]['p50'] * 1e3:>8.1f}/{results[e, users]['p95'] * 1e3:<9.1f}"
                     for e in args.engine]  # fmt: skip
            print(f"{users:>5} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
