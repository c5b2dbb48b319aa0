"""AdapterBank: a fixed number of adapter slots stacked per layer, with LRU eviction.

``AdapterBank.attach`` wraps the model's linear layers in ``BatchedAdapterLinear``; ``load`` reads
a PEFT LoRA folder or an fLoRA folder (``flora.py``) into a slot of every layer it targets;
``rows`` tells the layers which slot each batch row uses for the forward passes run inside it.
Loading, unloading and running batches can interleave freely: nothing is restarted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from . import flora, ops
from .layer import BatchedAdapterLinear, StepState
from .metadata import NO_ADAPTER

__all__ = ["AdapterBank", "AdapterBankConfig", "AdapterError"]

log = logging.getLogger(__name__)

_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<role>A|B)\.weight$")


class AdapterError(ValueError):
    """An adapter cannot be loaded or used; the message says how to fix it."""


@dataclass(frozen=True)
class AdapterBankConfig:
    max_adapters: int = 8  # slots resident at once; loading one more evicts the least recently used
    max_rank: int = 64  # largest rank a slot holds; smaller ranks are zero-padded and never computed
    # Last name component of the nn.Linear layers to wrap (e.g. ("q_proj", "v_proj")). None wraps
    # every nn.Linear but the output embedding (lm_head): a layer's bank memory is only allocated
    # when an adapter that targets it is loaded, so wrapping everything costs nothing up front.
    target_modules: tuple[str, ...] | None = None
    backend: ops.Backend = "auto"  # "auto": Triton on CUDA, torch elsewhere; or force one

    def __post_init__(self) -> None:
        if self.max_adapters < 1:
            raise ValueError(f"max_adapters must be >= 1, got {self.max_adapters}")
        if not 1 <= self.max_rank <= 256:
            raise ValueError(f"max_rank must be in [1, 256], got {self.max_rank}")
        if self.target_modules is not None:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))


@dataclass
class _Resident:
    slot: int
    kind: str  # "lora" | "flora"
    path: str
    rank: int  # largest rank over its modules
    stamp: int = 0  # which load this is: a reload under the same name gets a new one


class AdapterBank:
    """Adapters resident on the model's device, ready to be mixed row by row in one batch."""

    def __init__(self, model: nn.Module, layers: dict[str, BatchedAdapterLinear], state: StepState,
                 config: AdapterBankConfig) -> None:  # fmt: skip
        self.model = model
        self.config = config
        self._layers = layers  # module path → wrapper
        self._state = state
        self._resident: OrderedDict[str, _Resident] = OrderedDict()  # least recently used first
        self._loads = 0  # loads so far: the next load's stamp
        self._pinned: frozenset[str] = frozenset()  # adapters of the batch now inside rows()
        # Held by rows() for the whole batch and by load/unload: slot writes never race a forward.
        self._lock = threading.RLock()

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def attach(cls, model: nn.Module, config: AdapterBankConfig = AdapterBankConfig()) -> "AdapterBank":
        """Wrap ``model``'s targeted linear layers (in place) and return the bank that feeds them."""
        if any(isinstance(m, BatchedAdapterLinear) for m in model.modules()):
            raise AdapterError("this model already has an AdapterBank attached: reuse it, or detach() it first")
        state = StepState(backend=config.backend)
        skip = set()
        get_out = getattr(model, "get_output_embeddings", None)
        if callable(get_out) and get_out() is not None:
            skip.add(id(get_out()))
        targets = [
            (name, module)
            for name, module in model.named_modules()
            if type(module) is nn.Linear
            and id(module) not in skip
            and (config.target_modules is None or name.rsplit(".", 1)[-1] in config.target_modules)
        ]
        if not targets:
            raise AdapterError(f"no nn.Linear layer matches target_modules={config.target_modules} in this model")
        layers = {}
        for name, module in targets:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            wrapper = BatchedAdapterLinear(module, name=name, state=state)
            setattr(parent, child, wrapper)
            layers[name] = wrapper
        log.info("attached an adapter bank to %d linear layers (%d slots, max rank %d)",
                 len(layers), config.max_adapters, config.max_rank)  # fmt: skip
        return cls(model, layers, state, config)

    def detach(self) -> nn.Module:
        """Put the original linear layers back and free the bank; return the model."""
        with self._lock:
            for name, wrapper in self._layers.items():
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child, wrapper.base_layer)
            self._layers.clear()
            self._resident.clear()
            return self.model

    # ---- adapters -----------------------------------------------------------------------------

    def loaded(self) -> list[str]:
        """Names of resident adapters, least recently used first."""
        return list(self._resident)

    def stamp(self, name: str) -> int | None:
        """An id of the weights now loaded as ``name`` (None: not loaded); a reload changes it.

        Whoever keeps results computed with an adapter (the prefix cache) keys them by it.
        """
        resident = self._resident.get(name)
        return None if resident is None else resident.stamp

    def memory_bytes(self) -> int:
        """Bytes of device memory held by the bank's tensors (all slots of allocated layers)."""
        return sum(layer.memory_bytes() for layer in self._layers.values())

    def load(self, name: str, path: str | os.PathLike) -> None:
        """Load (or reload in place) the PEFT LoRA or fLoRA adapter in folder ``path`` as ``name``.

        Evicts the least recently used adapter when every slot is taken. Everything is read and
        checked before any slot is touched, so a failed load leaves the bank as it was.
        """
        kind, modules = self._read(name, Path(path))
        with self._lock:
            slot = self._slot_for(name)
            for layer_name, layer in self._layers.items():
                entry = modules.get(layer_name)
                if entry is None:
                    layer.write_slot(slot, None, None, 0.0)
                    continue
                w_in, w_out, scale = entry
                layer.allocate(num_slots=self.config.max_adapters, max_rank=self.config.max_rank)
                layer.write_slot(slot, w_in, w_out, scale)
            rank = max(w_in.shape[0] for w_in, _, _ in modules.values())
            self._loads += 1
            self._resident[name] = _Resident(slot=slot, kind=kind, path=str(path), rank=rank, stamp=self._loads)
            self._resident.move_to_end(name)
        log.info("loaded %s adapter %r (rank %d, %d layers) into slot %d; bank holds %.1f MiB",
                 kind, name, rank, len(modules), slot, self.memory_bytes() / 2**20)  # fmt: skip

    def unload(self, name: str) -> None:
        """Free ``name``'s slot. Unknown names raise AdapterError."""
        with self._lock:
            if name not in self._resident:
                raise AdapterError(f"adapter {name!r} is not loaded (loaded: {self.loaded()})")
            if name in self._pinned:
                raise AdapterError(f"adapter {name!r} is used by the batch being run: unload it after the batch")
            slot = self._resident.pop(name).slot
            for layer in self._layers.values():
                layer.write_slot(slot, None, None, 0.0)
        log.info("unloaded adapter %r from slot %d", name, slot)

    @contextmanager
    def rows(self, adapters: Sequence[str | None]) -> Iterator[None]:
        """Run the model inside this block with row ``i`` of every batch on ``adapters[i]``.

        ``None`` rows run the plain base model. Forward passes inside may be a prefill (B, T) or
        decode steps (B, 1); their batch size must be ``len(adapters)``.
        """
        with self._lock:
            if self._state.lora_rows is not None:
                raise AdapterError("bank.rows() blocks cannot be nested: finish one batch before starting another")
            lora_rows, flora_rows = [], []
            for entry in adapters:
                resident = None
                if entry is not None:
                    resident = self._resident.get(entry)
                    if resident is None:
                        raise AdapterError(f"adapter {entry!r} is not loaded: call bank.load({entry!r}, path) first")
                    self._resident.move_to_end(entry)
                lora_rows.append(resident.slot if resident and resident.kind == "lora" else NO_ADAPTER)
                flora_rows.append(resident.slot if resident and resident.kind == "flora" else NO_ADAPTER)
            device = self._device()
            self._pinned = frozenset(a for a in adapters if a is not None)
            self._state.set_rows(
                torch.tensor(lora_rows, dtype=torch.int32, device=device),
                torch.tensor(flora_rows, dtype=torch.int32, device=device),
            )
            try:
                yield
            finally:
                self._state.set_rows(None, None)
                self._pinned = frozenset()

    # ---- internals ----------------------------------------------------------------------------

    def _device(self) -> torch.device:
        return next(iter(self._layers.values())).base_layer.weight.device

    def _slot_for(self, name: str) -> int:
        if name in self._resident:
            if name in self._pinned:
                raise AdapterError(f"adapter {name!r} is used by the batch being run: reload it after the batch")
            return self._resident[name].slot
        used = {r.slot for r in self._resident.values()}
        free = [s for s in range(self.config.max_adapters) if s not in used]
        if free:
            return free[0]
        for victim, resident in self._resident.items():  # least recently used first
            if victim not in self._pinned:
                del self._resident[victim]
                log.info("evicted adapter %r from slot %d to make room for %r", victim, resident.slot, name)
                return resident.slot
        raise AdapterError(
            f"all {self.config.max_adapters} adapter slots are used by the batch being run: load {name!r} "
            "between batches, or attach the bank with a larger AdapterBankConfig.max_adapters"
        )

    def _read(self, name: str, path: Path) -> tuple[str, dict[str, tuple[torch.Tensor, torch.Tensor, float]]]:
        config_file = path / flora.CONFIG_NAME
        if not config_file.is_file():
            raise AdapterError(f"cannot load adapter {name!r}: {config_file} does not exist (expected a PEFT folder)")
        if not (path / flora.WEIGHTS_NAME).is_file():
            raise AdapterError(
                f"cannot load adapter {name!r}: {path / flora.WEIGHTS_NAME} is missing; save the adapter with "
                "save_pretrained(..., safe_serialization=True)"
            )
        try:
            meta = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AdapterError(f"cannot load adapter {name!r}: {config_file} is not valid JSON ({exc})") from exc
        peft_type = str(meta.get("peft_type", "")).upper()
        if peft_type == "LORA":
            kind, modules = "lora", self._read_lora(name, path, meta)
        elif peft_type == flora.PEFT_TYPE:
            try:
                pairs, scale = flora.read_flora(path, meta)
            except (ValueError, KeyError) as exc:
                raise AdapterError(f"cannot load fLoRA adapter {name!r}: {exc}") from exc
            kind, modules = "flora", {k: (a, b, scale) for k, (a, b) in pairs.items()}
        else:
            raise AdapterError(
                f"adapter {name!r} has peft_type {meta.get('peft_type')!r}: only LORA and FLORA are served"
            )
        if not modules:
            raise AdapterError(f"adapter {name!r} in {path} holds no weights")
        for module, (w_in, w_out, _) in modules.items():
            self._check_shapes(name, module, w_in, w_out)
        return kind, modules

    def _read_lora(self, name: str, path: Path, meta: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        unsupported = {
            "use_dora": "DoRA adapters",
            "lora_bias": "adapters with a trained LoRA bias",
            "fan_in_fan_out": "fan_in_fan_out (Conv1D) layers",
            "modules_to_save": "adapters with modules_to_save (fully trained extra layers)",
            "trainable_token_indices": "adapters with trainable tokens",
        }
        for key, what in unsupported.items():
            if meta.get(key):
                raise AdapterError(f"adapter {name!r}: {what} cannot be batched per row; retrain without {key}")
        if meta.get("bias", "none") != "none":
            raise AdapterError(f"adapter {name!r} trains biases (bias={meta['bias']!r}); retrain with bias='none'")
        alpha = float(meta.get("lora_alpha", 8))
        alpha_pattern = meta.get("alpha_pattern") or {}
        rslora = bool(meta.get("use_rslora", False))
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in load_file(str(path / flora.WEIGHTS_NAME)).items():
            m = _LORA_KEY.match(key)
            if m is None:
                raise AdapterError(
                    f"adapter {name!r} has tensor {key!r}, which is not a LoRA weight of a linear layer "
                    "(embedding and convolution LoRA are not served)"
                )
            module = m["module"].removeprefix(_PEFT_PREFIX)
            pairs.setdefault(module, {})[m["role"]] = tensor
        modules = {}
        for module, pair in pairs.items():
            if set(pair) != {"A", "B"}:
                raise AdapterError(
                    f"adapter {name!r} has only lora_{next(iter(pair))} for {module!r}; the file is incomplete"
                )
            r = pair["A"].shape[0]
            a = alpha_pattern[_pattern_key(alpha_pattern, module)] if _pattern_key(alpha_pattern, module) else alpha
            # PEFT's scaling: alpha/r, or alpha/sqrt(r) for rsLoRA, with r and alpha per module.
            scale = a / math.sqrt(r) if rslora else a / r
            modules[module] = (pair["A"], pair["B"], float(scale))
        return modules

    def _check_shapes(self, name: str, module: str, w_in: torch.Tensor, w_out: torch.Tensor) -> None:
        layer = self._layers.get(module)
        if layer is None:
            if module in dict(self.model.named_modules()):
                raise AdapterError(
                    f"adapter {name!r} targets {module!r}, which this bank does not wrap: attach with "
                    f"AdapterBankConfig(target_modules=None) or include {module.rsplit('.', 1)[-1]!r}"
                )
            raise AdapterError(f"adapter {name!r} targets {module!r}, which this model does not have: "
                               "it was trained for a different base model")  # fmt: skip
        r = w_in.shape[0]
        if r > self.config.max_rank:
            raise AdapterError(
                f"adapter {name!r} has rank {r} at {module!r} but the bank holds at most rank "
                f"{self.config.max_rank}: raise AdapterBankConfig.max_rank or retrain with r <= {self.config.max_rank}"
            )
        if tuple(w_in.shape) != (r, layer.in_features) or tuple(w_out.shape) != (layer.out_features, r):
            raise AdapterError(
                f"adapter {name!r} has shapes {tuple(w_in.shape)}/{tuple(w_out.shape)} at {module!r}, where the "
                f"model's layer is {layer.in_features}→{layer.out_features}: it was trained for a different base model"
            )


def _pattern_key(pattern: dict, module: str) -> str | None:
    # PEFT's get_pattern_key: a pattern key matches a module path at a dot boundary, at its end.
    for key in pattern:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None
