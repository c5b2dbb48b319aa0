"""Building the vLLM engine for a ``Backend``: the client, the server (started here unless the
operator points the backend at one), the adapter bank and the scheduler."""

from __future__ import annotations

import logging
import socket

from ..loading import ModelUnavailable
from ..scheduler import SchedulerConfig
from .vllm_bank import VllmBank
from .vllm_client import VllmClient, VllmServer, VllmServerConfig, VllmUnavailable
from .vllm_scheduler import VllmScheduler

__all__ = ["start_vllm", "vllm_urls", "START_TIMEOUT_S"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 900.0  # a first start compiles and profiles; minutes on a loaded CPU


def vllm_urls(value: str) -> list[str]:
    """The servers of ``--vllm-url``: one URL, or several replicas of one model separated by commas."""
    return [url.strip() for url in (value or "").split(",") if url.strip()]


def start_vllm(config, engine, *, model: str, metrics=None) -> tuple[VllmBank, VllmScheduler]:
    """(bank, scheduler) over the vLLM servers at ``config.vllm_url``, or over one started here
    for ``model`` (the folder the backend loaded: servers at ``vllm_url`` must serve the same model).

    ``ModelUnavailable`` (the backend's status then says it) when vLLM is missing or does not come up.
    """
    server = None
    try:
        if config.vllm_url:
            clients = [VllmClient(url) for url in vllm_urls(config.vllm_url)]
            for client in clients:
                if not client.healthy():
                    log.warning("the vLLM server at %s does not answer yet; requests fail until it does", client.url)
        else:
            server = VllmServer(VllmServerConfig(
                model=model, port=_free_port(), max_loras=config.max_adapters, max_lora_rank=config.max_rank,
                max_model_len=engine.max_prompt_tokens + engine.config.max_new_tokens,
                dtype=_dtype(config.dtype)))  # fmt: skip
            server.start()
            server.wait_ready(START_TIMEOUT_S)
            clients = [VllmClient(server.url)]
        bank = VllmBank(clients, max_adapters=config.max_adapters, max_rank=config.max_rank)
    except (VllmUnavailable, ValueError, OSError) as exc:
        if server is not None:
            server.stop()
        raise ModelUnavailable(f"the vLLM engine cannot start: {exc}") from exc
    scheduling = SchedulerConfig(max_batch=config.max_batch, max_queue=config.max_queue)
    return bank, VllmScheduler(engine, bank=bank, config=scheduling, metrics=metrics, server=server)


def _dtype(choice: str) -> str:
    """The backend's --dtype for vLLM: auto is fp32 on a CPU (as the native engine), vLLM's own on a GPU."""
    if choice != "auto":
        return choice
    import torch

    return "auto" if torch.cuda.is_available() else "float32"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
