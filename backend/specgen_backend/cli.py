"""``specgen-backend serve``: run the model server, standalone or as the server extension's child.

When it is listening it writes one JSON line to stdout, ``{"event": "listening", "url": ...}``,
so a parent process that asked for port 0 learns the port; everything else goes to the log
(stderr).

``specgen-backend download MODEL``: fetch a hub model into the Hugging Face cache with a progress
bar (resumable: Ctrl+C keeps what came, and the same command goes on from there; verified against
the hub's sizes and hashes), where ``serve --model auto`` finds it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from .engine import EngineConfig
from .loading import FIM_SETTINGS
from .server import Backend, BackendConfig

__all__ = ["main", "default_model", "download"]

# Used when nothing else is configured and the embedded model is absent.
DEFAULT_HUB_MODEL = "Qwen/Qwen2.5-Coder-0.5B"


def default_model() -> str:
    """The embedded model shipped with the package when present, else the hub default."""
    try:
        from .models import default_model_path
    except ImportError:
        return DEFAULT_HUB_MODEL
    path = default_model_path()
    return str(path) if path is not None else DEFAULT_HUB_MODEL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specgen-backend", description="jupyter-specgen model backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the websocket model server")
    serve.add_argument("--model", default="auto",
                       help="hub id or local folder of a causal LM; auto (default): the largest code model of the list "
                            "found in the Hugging Face cache or a --model-dir that fits this device, else the embedded model")
    serve.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                       help="folder holding model folders (DIR/Qwen2.5-Coder-0.5B, ...) that auto looks in; repeatable")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--port", type=int, default=0, help="port (default: any free port, reported on stdout)")
    serve.add_argument("--token-file", type=Path, help="file holding the shared secret (default: $SPECGEN_BACKEND_TOKEN)")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    serve.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    serve.add_argument("--max-queue", type=int, default=64, help="waiting requests before 'overloaded'")
    serve.add_argument("--max-batch", type=int, default=16, help="candidate rows decoded together in one step")
    serve.add_argument("--max-adapters", type=int, default=8, help="adapters resident at once (least recently used evicted)")
    serve.add_argument("--max-rank", type=int, default=64, help="largest LoRA rank an adapter slot holds")
    serve.add_argument("--adapter-root", type=Path, help="users load adapters from ADAPTER_ROOT/<user>/... (default: no loading)")
    serve.add_argument("--shared-adapters", type=Path, help="folder of PEFT adapter folders published to every user as shared/<name>")
    serve.add_argument("--train-device", default="auto", help="where personalize jobs train: auto (cuda if present), cpu, cuda:N")
    serve.add_argument("--train-steps", type=int, default=0,
                       help="optimizer steps of a personalize job's main adapter (0: planned from the data, 20 to 100)")
    serve.add_argument("--max-new-tokens", type=int, default=128)
    serve.add_argument("--fim", default="auto", choices=FIM_SETTINGS,
                       help="fill-in-the-middle prompts (the text after the cursor too) for a model with FIM tokens: on; "
                            "off (only the text before the cursor); auto (default): on unless the model's folder "
                            "advises plain prompts, as the embedded model's does")
    serve.add_argument("--no-fim", action="store_const", dest="fim", const="off", help="the same as --fim off")
    serve.add_argument("--prefix-cache-mb", type=int, default=BackendConfig.prefix_cache_mb,
                       help="memory for the KV caches of recent prompts, reused by the next keystroke (0: off)")
    serve.add_argument("--engine", default="native", choices=["native", "vllm"],
                       help="who generates: native (this process; fLoRA too) or vllm (a vLLM server: docs/serving.md)")
    serve.add_argument("--vllm-url", default=None,
                       help="with --engine vllm: the `vllm serve` server to use, http://HOST:PORT, or several replicas of "
                            "one model separated by commas, each user routed to one of them (default: start one)")
    serve.add_argument("--log-level", default="INFO")
    fetch = sub.add_parser("download", help="download a model into the Hugging Face cache (resumable, verified)")
    fetch.add_argument("model", help="hub id, e.g. Qwen/Qwen2.5-Coder-0.5B")
    fetch.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    fetch.add_argument("--cache-dir", type=Path, help="hub cache (default: $HF_HUB_CACHE, or $HF_HOME/hub)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "download":
        sys.exit(download(args.model, revision=args.revision, cache_dir=args.cache_dir))
    # Structured logs: one JSON object per line, ready for a log shipper.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    token = args.token_file.read_text().strip() if args.token_file else os.environ.get("SPECGEN_BACKEND_TOKEN", "")
    if not token:
        sys.exit("specgen-backend: a token is required: pass --token-file FILE or set SPECGEN_BACKEND_TOKEN")
    if args.vllm_url and args.engine != "vllm":
        sys.exit("specgen-backend: --vllm-url is used only with --engine vllm")
    if args.prefix_cache_mb < 0:
        sys.exit(f"specgen-backend: --prefix-cache-mb must be 0 (off) or more, not {args.prefix_cache_mb}")
    config = BackendConfig(
        model=args.model or "auto",
        model_dirs=tuple(str(d) for d in args.model_dir),
        token=token,
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.dtype,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        max_adapters=args.max_adapters,
        max_rank=args.max_rank,
        adapter_root=str(args.adapter_root) if args.adapter_root else None,
        shared_adapters=str(args.shared_adapters) if args.shared_adapters else None,
        train_device=_train_device(args.train_device),
        train_steps=args.train_steps,
        engine=EngineConfig(max_new_tokens=args.max_new_tokens, fim=args.fim),
        prefix_cache_mb=args.prefix_cache_mb,
        serving_engine=args.engine,
        vllm_url=args.vllm_url,
    )
    asyncio.run(_serve(config))


def download(model: str, *, revision: str = "main", cache_dir: Path | None = None) -> int:
    """Download ``model`` with a tqdm bar on stderr; the exit status (130 after Ctrl+C)."""
    from tqdm import tqdm

    from .download import Cancelled, DownloadError, download_model

    bars: list = []  # made at the first progress, once the size is known (none when offline)

    def progress(p) -> None:
        if not bars:  # bytes, rate and time left; what an earlier download left counts as done
            bars.append(tqdm(total=p.total, initial=p.done, unit="B", unit_scale=True, unit_divisor=1024, desc=model,
                             dynamic_ncols=True, file=sys.stderr))  # fmt: skip
        bars[0].update(p.done - bars[0].n)

    try:
        try:
            done = download_model(model, revision=revision, cache_dir=cache_dir, on_progress=progress)
        finally:
            for bar in bars:
                bar.close()
    except KeyboardInterrupt:
        sys.stderr.write(f"specgen-backend: download of {model} interrupted; what came is kept: run the same command "
                         "again to go on from there\n")
        return 130
    except (Cancelled, DownloadError) as exc:
        sys.stderr.write(f"specgen-backend: {exc}\n")
        return 1
    kept = "already here" if done.transferred == 0 else f"{done.transferred / 1e6:.1f} MB transferred"
    sys.stderr.write(f"{model}: {done.total / 1e6:.1f} MB in {done.path} ({kept}); verified: {done.verified}\n")
    return 0


def _train_device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


async def _serve(config: BackendConfig) -> None:
    backend = Backend(config)
    await backend.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(json.dumps({"event": "listening", "url": backend.url, "model": config.model}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    await backend.close()
