"""Fit an adapter on training examples: loss on the target tokens only.

``TrainConfig.kind`` picks the adapter: ``"lora"``, PEFT's additive LoRA (the default; what
users bring from elsewhere), or ``"flora"``, the multiplicative fLoRA of ``lora/flora.py``, whose
rows batch through the base weight in one matmul when many users are served together.

The base model is loaded once (:func:`load_base`) and copied for each adapter trained from it,
so a variant set of K adapters does not reload weights K times. Progress goes to a callback
``progress(step, total, loss)``; a ``threading.Event`` cancels between steps. An exception raised
by the callback aborts the run like any other failure (tests inject crashes that way); nothing
is written to ``out_dir`` unless training finishes.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .examples import TrainingExample, render

__all__ = ["TrainConfig", "BaseModel", "TrainingCancelled", "TrainResult", "load_base", "encode", "train_adapter",
           "peft_model", "flora_model", "planned_steps", "training_threads", "LORA_TARGETS"]

log = logging.getLogger(__name__)

# Attention and MLP projections of Llama/Qwen/Mistral-style models.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainConfig:
    kind: str = "lora"  # "lora" (PEFT, additive) or "flora" (multiplicative; see lora/flora.py)
    rank: int = 8  # LoRA rank
    flora_rank: int = 4  # fLoRA rank: each rank component costs a pass over W0, so it stays small
    # fLoRA's multiplicative update moves the output less per step than LoRA's: on the tests' tiny
    # model 1e-2 learnt the user's idiom in 120 steps where LoRA's 2e-3 learnt next to nothing.
    flora_learning_rate: float = 1e-2
    alpha: int = 16  # LoRA scale numerator (scale = alpha / rank)
    dropout: float = 0.0  # small data sets overfit either way; dropout slows tiny runs down
    target_modules: tuple[str, ...] = LORA_TARGETS
    learning_rate: float = 2e-3  # LoRA tolerates larger rates than full fine-tuning
    # Optimizer steps (the data is cycled, shuffled each pass); 0: planned from the data, see
    # ``planned_steps`` and the three fields below.
    steps: int = 100
    max_steps: int = 100  # most steps a planned run takes
    # Passes over the data beyond which more steps only memorise it: 2 examples get 20 steps, not
    # 100 (which took 11 minutes on a busy laptop), while 40 examples in batches of 8 still get 100.
    max_epochs: int = 20
    min_steps: int = 20  # even one example gets this many (an adapter needs a few updates to move)
    batch_size: int = 8
    max_prompt_tokens: int = 384  # context kept before the target (cut at the far end)
    max_target_tokens: int = 128
    weight_decay: float = 0.0
    seed: int = 0


def planned_steps(config: "TrainConfig", examples: int) -> int:
    """Optimizer steps a run on ``examples`` examples takes: ``config.steps`` when it is set; else
    ``config.max_epochs`` passes over the data, between ``config.min_steps`` and ``config.max_steps``."""
    if config.steps > 0:
        return config.steps
    per_epoch = max(1, -(-examples // max(1, config.batch_size)))  # ceil
    return max(1, min(config.max_steps, max(config.min_steps, config.max_epochs * per_epoch)))


def training_threads(cpus: Optional[int] = None) -> int:
    """Torch CPU threads for a training process: half the cores, at least one.

    The backend's model thread keeps serving completions while a job trains beside it. Two torch
    thread pools that each want every core make both crawl: on 2 busy cores one step of the
    embedded model on two short examples took 10-20 s with 2 threads and 0.6 s with 1.
    """
    import os

    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // 2)


class TrainingCancelled(Exception):
    """The run was cancelled; nothing was published."""


@dataclass
class BaseModel:
    """A loaded base model and its tokenizer, kept on the CPU or one device."""

    path: str
    model: Any
    tokenizer: Any
    fim: Any = None
    # Held while adapters are injected into ``model`` in place (evaluation) or while it is copied
    # (training), so jobs of different users sharing one base never see each other's layers.
    lock: Any = field(default_factory=threading.RLock, repr=False)

    @property
    def device(self):
        return next(self.model.parameters()).device


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)


def load_base(path: str | Path, *, device: str = "cpu", fim: str = "auto") -> BaseModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..loading import LOAD_LOCK, prompt_fim

    with LOAD_LOCK:  # see loading.LOAD_LOCK: loads in other threads of this process would race
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path)).to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    # The prompt form the backend serves this model with (its ``fim`` setting): the adapter learns that one.
    return BaseModel(path=str(path), model=model, tokenizer=tokenizer, fim=prompt_fim(str(path), tokenizer, fim))


def encode(base: BaseModel, example: TrainingExample, config: TrainConfig) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt's labels are -100 so only the target is learned."""
    tok = base.tokenizer
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    prompt, _ = render(example, fim=base.fim, count_tokens=count, max_prompt_tokens=config.max_prompt_tokens)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"][-config.max_prompt_tokens:]
    # The target ends with the next cell's separator's newline run so that the model learns to stop
    # where the serving stop strings cut; EOS makes the end explicit for FIM prompts.
    target_ids = tok(example.target.rstrip("\n") + "\n", add_special_tokens=False)["input_ids"]
    target_ids = target_ids[: config.max_target_tokens - 1] + [tok.eos_token_id]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def _collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int, device):
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def peft_model(base: BaseModel, config: TrainConfig, *, adapter_name: str = "default",
               init_adapter: Optional[str | Path] = None):
    """A fresh copy of the base model with a trainable LoRA adapter: new, or a copy of ``init_adapter``."""
    from peft import LoraConfig, PeftModel, get_peft_model

    with base.lock:
        model = copy.deepcopy(base.model)
    if init_adapter is not None:
        return PeftModel.from_pretrained(model, str(init_adapter), adapter_name=adapter_name, is_trainable=True)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.target_modules if t in present]
    if not targets:
        raise ValueError(f"none of the LoRA target modules {config.target_modules} exist in {base.path}; "
                         f"set TrainConfig.target_modules to names of its linear layers")
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora, adapter_name=adapter_name)


def flora_model(base: BaseModel, config: TrainConfig, *, init_adapter: Optional[str | Path] = None):
    """A fresh copy of the base model with trainable fLoRA layers: new, or a copy of ``init_adapter``.

    Returns (model, layers by module path, FLoRAConfig) for ``flora.save_flora``.
    """
    from ..lora.flora import FLoRAConfig, add_flora, load_flora

    with base.lock:
        model = copy.deepcopy(base.model)
    if init_adapter is not None:
        layers, flora_config = load_flora(model, init_adapter)
    else:
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = tuple(t for t in config.target_modules if t in present)
        if not targets:
            raise ValueError(f"none of the fLoRA target modules {config.target_modules} exist in {base.path}; "
                             f"set TrainConfig.target_modules to names of its linear layers")
        flora_config = FLoRAConfig(r=config.flora_rank, alpha=float(config.flora_rank), target_modules=targets,
                                   base_model_name_or_path=base.path)
        layers = add_flora(model, flora_config)
    for layer in layers.values():
        layer.flora_in.requires_grad_(True)
        layer.flora_out.requires_grad_(True)
    return model, layers, flora_config


def train_adapter(base: BaseModel, examples: Sequence[TrainingExample], out_dir: str | Path, *,
                  config: TrainConfig = TrainConfig(), progress: Optional[Progress] = None,
                  cancel: Optional[threading.Event] = None, init_adapter: Optional[str | Path] = None) -> TrainResult:
    """Train on ``examples`` and save the adapter (PEFT format) to ``out_dir``.

    ``init_adapter`` starts from an existing adapter (its rank and targets) instead of a new one.
    """
    import torch

    if not examples:
        raise ValueError("no training examples: personalize needs at least one notebook cell that ran cleanly")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    if config.kind not in ("lora", "flora"):
        raise ValueError(f"TrainConfig.kind must be 'lora' or 'flora', not {config.kind!r}")
    encoded = [encode(base, e, config) for e in examples]
    if config.kind == "flora":
        model, flora_layers, flora_config = flora_model(base, config, init_adapter=init_adapter)
    else:
        model = peft_model(base, config, init_adapter=init_adapter)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    rate = config.flora_learning_rate if config.kind == "flora" else config.learning_rate
    optimizer = torch.optim.AdamW(params, lr=rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # short warm-up, then flat
        optimizer, lambda s: min(1.0, (s + 1) / max(1, planned_steps(config, len(encoded)) // 10)))
    order: list[int] = []
    losses = []
    pad = base.tokenizer.pad_token_id
    steps = planned_steps(config, len(encoded))
    for step in range(1, steps + 1):
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled(f"cancelled at step {step - 1} of {steps}")
        batch = []
        while len(batch) < min(config.batch_size, len(encoded)):
            if not order:
                order = list(range(len(encoded)))
                rng.shuffle(order)
            batch.append(encoded[order.pop()])
        ids, labels, mask = _collate(batch, pad, base.device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, steps, losses[-1])
    out_dir = Path(out_dir)
    if config.kind == "flora":
        from ..lora.flora import save_flora

        save_flora(flora_layers, out_dir, flora_config)
    else:
        model.save_pretrained(str(out_dir))
    log.info("trained %s adapter on %d examples, %d steps, final loss %.4f", config.kind, len(examples), steps,
             losses[-1])
    return TrainResult(out_dir=out_dir, steps=steps, losses=losses)
