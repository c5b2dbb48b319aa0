"""fLoRA adapters: a torch module to train them and their on-disk format.

fLoRA (Wen & Chaudhuri, ICLR 2024) adapts a linear layer multiplicatively, which lets a batch
where every row has its own adapter run through the base weight ``W0`` in one matmul::

    W' = W0 ∘ (1 + s · A Bᵀ)                  A: (N, r) "flora_out", B: (K, r) stored as (r, K) "flora_in"
    y  = x W'ᵀ = x W0ᵀ + s · Σ_j A[:, j] ∘ ((B[:, j] ∘ x) W0ᵀ)

which is the paper's ``Y = A ∘ ((B ∘ X) W0)`` summed over the rank. ``A`` starts at zero, so a new
adapter is the base model, and ``s = alpha / r``.

On disk (``FORMAT_VERSION`` 1), one folder per adapter, like PEFT's:

- ``adapter_config.json``: ``{"peft_type": "FLORA", "format_version": 1, "r": int, "alpha": float,
  "target_modules": [names], "base_model_name_or_path": str | null}``
- ``adapter_model.safetensors``: for each adapted layer at module path ``P`` of the causal LM
  (e.g. ``model.layers.0.self_attn.q_proj``): ``P.flora_in`` (r, K) and ``P.flora_out`` (N, r).

PEFT cannot load these folders; ``AdapterBank.load`` tells the two formats apart by ``peft_type``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["FORMAT_VERSION", "FLoRAConfig", "FLoRALinear", "add_flora", "remove_flora", "save_flora", "read_flora",
           "is_flora", "load_flora"]

FORMAT_VERSION = 1
PEFT_TYPE = "FLORA"
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


@dataclass(frozen=True)
class FLoRAConfig:
    r: int = 4  # rank; fLoRA costs one pass over W0 per rank component, so keep it small
    alpha: float = 4.0  # scale s = alpha / r, as LoRA's
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # last name component of the adapted Linears
    base_model_name_or_path: str | None = None  # recorded for the user, not checked

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"FLoRAConfig.r must be >= 1, got {self.r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))


class FLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` with a trainable fLoRA adapter (one adapter: training, not serving)."""

    def __init__(self, base_layer: nn.Linear, *, r: int, alpha: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.scale = alpha / r
        w = base_layer.weight
        self.flora_in = nn.Parameter(torch.empty(r, base_layer.in_features, dtype=w.dtype, device=w.device))
        self.flora_out = nn.Parameter(torch.zeros(base_layer.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.normal_(self.flora_in, mean=1.0, std=0.02)  # near-identity input scaling, as in the paper
        base_layer.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., N)
        xs = x.unsqueeze(-2) * self.flora_in  # (..., r, K)
        z = nn.functional.linear(xs, self.base_layer.weight)  # (..., r, N), no bias: W0 only
        return y + self.scale * (z * self.flora_out.T).sum(-2)


def add_flora(model: nn.Module, config: FLoRAConfig) -> dict[str, FLoRALinear]:
    """Replace the targeted ``nn.Linear`` layers of ``model`` by ``FLoRALinear``; return them by path."""
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in config.target_modules
    ]
    if not targets:
        raise ValueError(f"no nn.Linear named any of {config.target_modules} in the model: check target_modules")
    added = {}
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped = FLoRALinear(module, r=config.r, alpha=config.alpha)
        setattr(parent, child, wrapped)
        added[name] = wrapped
    return added


def remove_flora(model: nn.Module) -> int:
    """Put back the base layers of every ``FLoRALinear`` in ``model``; return how many there were."""
    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, FLoRALinear)]
    for name, module in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.base_layer)
    return len(wrapped)


def is_flora(path: str | os.PathLike) -> bool:
    """Whether the adapter folder ``path`` holds an fLoRA adapter (else: PEFT LoRA)."""
    try:
        meta = json.loads((Path(path) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return str(meta.get("peft_type", "")).upper() == PEFT_TYPE


def load_flora(model: nn.Module, path: str | os.PathLike) -> tuple[dict[str, FLoRALinear], FLoRAConfig]:
    """Wrap ``model``'s targeted layers (in place) with the adapter saved at ``path``.

    ``remove_flora(model)`` undoes it. Raises ValueError when the folder does not fit the model.
    """
    meta = json.loads((Path(path) / CONFIG_NAME).read_text())
    weights, _ = read_flora(path, meta)
    config = FLoRAConfig(r=int(meta["r"]), alpha=float(meta["alpha"]), target_modules=tuple(meta["target_modules"]),
                         base_model_name_or_path=meta.get("base_model_name_or_path"))
    layers = add_flora(model, config)
    if set(weights) != set(layers):
        remove_flora(model)
        raise ValueError(f"the fLoRA adapter at {path} adapts {sorted(weights)[:3]}..., the model has "
                         f"{sorted(layers)[:3]}...: it was trained for another base model")
    with torch.no_grad():
        for name, (w_in, w_out) in weights.items():
            layers[name].flora_in.copy_(w_in)
            layers[name].flora_out.copy_(w_out)
    return layers, config


def save_flora(layers: dict[str, FLoRALinear], path: str | os.PathLike, config: FLoRAConfig) -> Path:
    """Write the adapter folder atomically (temp folder + rename); return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{name}.flora_in"] = layer.flora_in.detach().contiguous().cpu()
        tensors[f"{name}.flora_out"] = layer.flora_out.detach().contiguous().cpu()
    meta = {"peft_type": PEFT_TYPE, "format_version": FORMAT_VERSION, **asdict(config)}
    meta["target_modules"] = list(config.target_modules)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def read_flora(path: str | os.PathLike, meta: dict) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """Per module path ``(flora_in (r, K), flora_out (N, r))`` and the scale, from a folder.

    ``meta`` is the already-parsed ``adapter_config.json``. Raises ValueError with the fix.
    """
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"fLoRA format_version {version!r} is not supported (this build reads {FORMAT_VERSION})")
    r, alpha = int(meta["r"]), float(meta["alpha"])
    state = load_file(str(Path(path) / WEIGHTS_NAME))
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name, _, role = key.rpartition(".")
        if role not in ("flora_in", "flora_out"):
            raise ValueError(f"unexpected tensor {key!r} in an fLoRA adapter: expected '<module>.flora_in|flora_out'")
        modules.setdefault(name, {})[role] = tensor
    out = {}
    for name, pair in modules.items():
        if set(pair) != {"flora_in", "flora_out"}:
            raise ValueError(
                f"fLoRA adapter has only {sorted(pair)} for {name!r}: both flora_in and flora_out are needed"
            )
        if pair["flora_in"].shape[0] != r or pair["flora_out"].shape[1] != r:
            raise ValueError(f"fLoRA tensors of {name!r} do not have rank r={r} from adapter_config.json")
        out[name] = (pair["flora_in"], pair["flora_out"])
    return out, alpha / r
