"""Load a Hugging Face causal LM and its tokenizer, by hub id or local folder.

The same code serves a hub model, a local checkout and the tiny models tests build, so the
real loading path is always the one exercised. When the model cannot be had (offline and not
cached, a wrong path), the error says which setting chooses the model and how to point it at a
local folder, instead of hanging on the network.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .prompt import detect_fim

__all__ = ["LOAD_LOCK", "ModelUnavailable", "LoadedModel", "load_model", "resolve_device", "resolve_dtype", "MODEL_SETTING_HELP",
           "FIM_SETTINGS", "prompt_fim"]

log = logging.getLogger(__name__)

MODEL_SETTING_HELP = (
    "The model is chosen by the setting `SpecgenExtension.model` (for example "
    "`jupyter lab --SpecgenExtension.model=/path/to/model-folder`, or "
    "`c.SpecgenExtension.model = '/path/to/model-folder'` in jupyter_server_config.py; "
    "for a standalone backend: `specgen-backend serve --model /path/to/model-folder`). "
    "Point it at a local folder holding a Hugging Face causal LM (config.json, weights, "
    "tokenizer files), or at a hub id on a machine that can download it once."
)


# transformers builds models under process-wide context managers (default device, empty-weight
# init); two loads in two threads of one process can see each other's and end up with weights
# left on the meta device. Every load in this process takes this lock.
LOAD_LOCK = threading.Lock()


FIM_SETTINGS = ("auto", "on", "off")


def prompt_fim(name: str, tokenizer, setting: str = "auto"):
    """The FIM format prompts of model ``name`` use (``prompt.FimFormat``), or None for plain ones.

    "on": whenever the tokenizer has FIM tokens; "off": never; "auto": as "on", unless the model's
    own folder advises plain prompts (``"serving": {"fim": false}`` in its MANIFEST.json). The
    embedded model does: it was trained on FIM documents but completes far worse from a FIM
    prompt than from the text before the cursor (docs/default_model.md), while real code models
    are better with FIM. Serving and personalization both ask here, so an adapter learns the
    prompts it is served with.
    """
    if setting not in FIM_SETTINGS:
        raise ValueError(f"FIM setting {setting!r}: choose from {', '.join(FIM_SETTINGS)}")
    fmt = detect_fim(tokenizer.get_vocab()) if setting != "off" else None
    if fmt is not None and setting == "auto" and _serving_advice(name).get("fim") is False:
        log.info("model %s advises plain prompts (its MANIFEST.json): FIM off", name)
        return None
    return fmt


def _serving_advice(name: str) -> dict:
    """The "serving" object of the MANIFEST.json in model folder ``name``, or {} (a hub id, a
    folder without one, an unreadable file)."""
    try:
        manifest = json.loads((Path(name) / "MANIFEST.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    advice = manifest.get("serving") if isinstance(manifest, dict) else None
    return advice if isinstance(advice, dict) else {}


class ModelUnavailable(RuntimeError):
    """The configured model cannot be loaded; the message says why and how to fix it."""


@dataclass
class LoadedModel:
    name: str  # as configured: a hub id or a path
    model: Any  # transformers PreTrainedModel, in eval mode, on ``device``
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    device: str
    dtype: str


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(f"device {device!r} was asked for but CUDA is not available; use --device cpu or auto")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        # Half precision on CPU is slow and sometimes unsupported; bf16 is the GPU default.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelUnavailable(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def load_model(name: str, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load ``name`` (a local folder or a hub id) for inference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelUnavailable(f"model folder {str(local)!r} has no config.json. {MODEL_SETTING_HELP}")
        source, kwargs = str(local), {}
    else:
        source, kwargs = name, _hub_kwargs(name)
    try:
        with LOAD_LOCK:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelUnavailable(f"could not load the model {name!r}: {_first_line(exc)}. {MODEL_SETTING_HELP}") from exc
    model.to(device)
    model.eval()
    log.info("loaded model %s on %s (%s)", name, device, torch_dtype)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, device=device, dtype=str(torch_dtype).removeprefix("torch."))


def _hub_kwargs(name: str) -> dict:
    """Use the local cache only, unless the hub is reachable and not disabled.

    A machine without network would otherwise retry connections for minutes before failing.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return {"local_files_only": True}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return {"local_files_only": True}
    except Exception:  # an unusual id; let from_pretrained explain
        log.debug("cache lookup for %s failed", name, exc_info=True)
    if not _hub_reachable():
        raise ModelUnavailable(
            f"the model {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"(offline?). {MODEL_SETTING_HELP}"
        )
    return {}


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
