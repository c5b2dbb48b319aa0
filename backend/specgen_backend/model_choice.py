"""Which model the backend serves when the setting says ``auto`` (the default), and why.

In order: the model the user configured (any value but ``auto``); else a real code model already on
this machine, in the Hugging Face cache or in one of the model folders named in a setting
(``SpecgenExtension.model_dirs``, ``specgen-backend serve --model-dir``), taken from a short list of
models with fill-in-the-middle support, the largest that fits the device's memory and a latency
budget; else the embedded model shipped with the package. Nothing here touches the network.

The answer carries a sentence saying why, which the status bar shows next to the model's name,
and, when the embedded model is chosen, the model of the list worth downloading on this device.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["AUTO", "CATALOG", "CatalogModel", "Choice", "Memory", "choose_model", "find_cached", "hub_cache_dir",
           "probe_memory", "fits", "catalog_entry", "model_dir_help"]

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class CatalogModel:
    repo_id: str
    params_b: float  # parameters, in billions
    download_bytes: int  # what the published safetensors weigh (what a download transfers)

    @property
    def short(self) -> str:
        return self.repo_id.split("/", 1)[1]


# Code models with fill-in-the-middle tokens, smallest first; sizes as published on the hub.
CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel("Qwen/Qwen2.5-Coder-0.5B", 0.49, 988_097_824),
    CatalogModel("deepseek-ai/deepseek-coder-1.3b-base", 1.35, 2_692_969_128),
    CatalogModel("Qwen/Qwen2.5-Coder-1.5B", 1.54, 3_087_467_144),
    CatalogModel("bigcode/starcoder2-3b", 3.03, 12_126_794_944),
    CatalogModel("Qwen/Qwen2.5-Coder-3B", 3.09, 6_171_926_792),
)

# Latency budgets: on a CPU only the 0.5B class answers a keystroke in well under a second; a GPU
# decodes a 3B model fast enough. Memory: fp32 on CPU, bf16 on CUDA (loading.resolve_dtype), plus
# room for the KV caches of a batch and the prefix cache.
CPU_MAX_PARAMS_B = 0.6
GPU_MAX_PARAMS_B = 3.5
_OVERHEAD = 1.25  # activations, KV caches of a batch, allocator slack, per byte of weights
_CUDA_HEADROOM = 1 << 30  # the prefix cache and the running batch, on top
_CPU_SHARE = 0.5  # of the RAM available: the kernels, the notebook's data and the rest of the machine keep the other half


@dataclass(frozen=True)
class Memory:
    device: str  # "cpu" or "cuda[:N]"
    free: int  # bytes a model may use: RAM available on CPU, free device memory on CUDA
    total: int

    def describe(self) -> str:
        if self.device.startswith("cuda"):
            return f"{_gb(self.free)} GB free of GPU memory ({self.device})"
        return f"{_gb(self.total)} GB of RAM on CPU"


@dataclass(frozen=True)
class Choice:
    model: str  # what to load: a local folder or a hub id
    name: str  # what to show: the hub id, or the folder as configured
    reason: str  # why, in one sentence
    source: str  # "configured", "hf_cache", "model_dir", "embedded"
    offer: Optional[CatalogModel] = None  # worth downloading (only when the embedded model is chosen)


def catalog_entry(repo_id: str) -> Optional[CatalogModel]:
    return next((m for m in CATALOG if m.repo_id == repo_id), None)


def fits(model: CatalogModel, memory: Memory) -> bool:
    """Whether ``model`` fits ``memory`` and the device's latency budget."""
    if memory.device.startswith("cuda"):
        need = model.params_b * 1e9 * 2 * _OVERHEAD + _CUDA_HEADROOM
        return model.params_b <= GPU_MAX_PARAMS_B and need <= memory.free
    need = model.params_b * 1e9 * 4 * _OVERHEAD
    return model.params_b <= CPU_MAX_PARAMS_B and need <= memory.free * _CPU_SHARE


def probe_memory(device: str = "auto") -> Memory:
    """The memory a model may use on ``device`` (``auto``: CUDA when present)."""
    from .loading import resolve_device

    device = resolve_device(device)
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return Memory(device=device, free=free, total=total)
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Memory(device="cpu", free=_available_ram() or total, total=total)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_cached(repo_id: str, *, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """The snapshot folder of ``repo_id`` in the hub cache if it holds a whole model, else ``None``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache_dir or hub_cache_dir()))
    except Exception:  # a malformed cache entry is "not there", not a crash of the backend's start
        log.debug("cache lookup of %s failed", repo_id, exc_info=True)
        return None
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return folder if _complete(folder) else None


def model_dir_help(model_dirs: Sequence[str], repo_id: str = CATALOG[0].repo_id) -> str:
    """How to put a model on this machine by hand (for the offline message)."""
    short = repo_id.split("/", 1)[1]
    where = (f"into {str(Path(model_dirs[0]) / short)!r} (a folder named in SpecgenExtension.model_dirs, "
             f"or specgen-backend serve --model-dir)") if model_dirs else (
        "into a folder and name that folder in SpecgenExtension.model_dirs (specgen-backend serve --model-dir)")
    return (f"copy a model folder of {repo_id} (config.json, the *.safetensors weights and the tokenizer files, "
            f"from a machine with network: `specgen-backend download {repo_id}` puts it in the Hugging Face cache) "
            f"{where}, or a Hugging Face cache entry models--{repo_id.replace('/', '--')} into {str(hub_cache_dir())!r} "
            f"(HF_HUB_CACHE); or set SpecgenExtension.model to the folder")


def choose_model(configured: str = AUTO, *, model_dirs: Sequence[str] = (), device: str = "auto",
                 memory: Optional[Memory] = None, cache_dir: Optional[Path] = None,
                 embedded: Optional[str] = None) -> Choice:
    """The model to serve, with the reason (see the module docstring for the order).

    ``memory``, ``cache_dir`` and ``embedded`` default to this machine's; tests pass their own.
    """
    if configured and configured != AUTO:
        return Choice(model=configured, name=configured, source="configured",
                      reason=f"{_short(configured)}: set by SpecgenExtension.model (specgen-backend serve --model)")
    memory = memory or probe_memory(device)
    found: list[tuple[CatalogModel, Path, str]] = []  # (model, folder, where)
    for entry in CATALOG:
        folder = find_cached(entry.repo_id, cache_dir=cache_dir)
        if folder is not None:
            found.append((entry, folder, "in the Hugging Face cache"))
            continue
        for root in model_dirs:
            folder = _in_model_dir(Path(root).expanduser(), entry.repo_id)
            if folder is not None:
                found.append((entry, folder, f"in {root}"))
                break
    fitting = [f for f in found if fits(f[0], memory)]
    if fitting:
        entry, folder, where = max(fitting, key=lambda f: f[0].params_b)
        largest = "the largest of the list" if len(found) > 1 else "a model of the list"
        return Choice(model=str(folder), name=entry.repo_id, source="hf_cache" if "Hugging Face" in where else "model_dir",
                      reason=f"{entry.short} found {where}; {largest} that fits {memory.describe()}"
                             + (" (CPU keeps to the 0.5B class for latency)" if memory.device == "cpu" else ""))  # fmt: skip
    if embedded is None:
        from .cli import default_model

        embedded = default_model()
    offer = max((m for m in CATALOG if fits(m, memory)), key=lambda m: m.params_b, default=None)
    if found:
        too_big = ", ".join(f[0].short for f in found)
        why = f"{too_big} found but too large for {memory.describe()}"
    else:
        why = (f"no code model of the list ({', '.join(m.short for m in CATALOG)}) in the Hugging Face cache"
               + (f" or in {', '.join(model_dirs)}" if model_dirs else ""))
    return Choice(model=embedded, name=embedded, source="embedded", offer=offer,
                  reason=f"{why}; using the embedded model {_short(embedded)}")


def _in_model_dir(root: Path, repo_id: str) -> Optional[Path]:
    """``repo_id``'s folder under a model folder: <root>/<name>, <root>/<org>/<name>, <root>/<org>--<name>,
    or a hub cache entry copied in (<root>/models--<org>--<name>)."""
    org, name = repo_id.split("/", 1)
    for folder in (root / name, root / org / name, root / f"{org}--{name}"):
        if _complete(folder):
            return folder
    if (root / f"models--{org}--{name}").is_dir():
        return find_cached(repo_id, cache_dir=root)
    return None


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds what ``from_pretrained`` needs: config, every weight shard, a tokenizer."""
    try:
        if not (folder / "config.json").is_file():
            return False
        if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()):
            return False
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            import json

            shards = set(json.loads(index.read_text())["weight_map"].values())
            return all((folder / shard).is_file() for shard in shards)
        return any(folder.glob("*.safetensors"))
    except (OSError, ValueError, KeyError):
        return False


def _available_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _short(model: str) -> str:
    path = Path(model).expanduser()
    return path.name if path.is_absolute() or path.exists() else model


def _gb(n: int) -> str:
    """Memory in GiB, written GB as system monitors do (24 GB of RAM is 24 GiB)."""
    g = n / (1 << 30)
    return f"{g:.0f}" if g >= 10 else f"{g:.1f}"
