"""Influence of each training example on a set of query examples, from LoRA gradients only.

SPA ("Synthesize, Partition, then Adapt") scores influence with inverse-Hessian-vector products
estimated by LiSSA. This module uses the cheaper approximation that TracIn/LESS-style methods
use instead: the Hessian is taken as the identity, so the influence of example ``z`` on query
``q`` is the similarity of their loss gradients, ``cos(g(z), g(q))``. Gradients are taken with
respect to the LoRA parameters of a trained adapter only, and compressed with a CountSketch
random projection (each coordinate hashed to one of ``dim`` buckets with a random sign), which
preserves inner products in expectation and costs memory proportional to the number of LoRA
parameters rather than to ``parameters x dim``.

Result: a matrix ``(n_train, n_query)`` of cosine similarities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

from .examples import TrainingExample
from .train import BaseModel, TrainConfig, _collate, encode

__all__ = ["InfluenceConfig", "projected_gradients", "influence_scores"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InfluenceConfig:
    dim: int = 1024  # sketch size: inner products are preserved up to ~1/sqrt(dim) relative noise
    seed: int = 0


class _Sketch:
    """CountSketch of a list of parameter tensors into ``dim`` buckets."""

    def __init__(self, params, dim: int, seed: int):
        import torch

        gen = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.buckets = []
        self.signs = []
        for p in params:
            n = p.numel()
            self.buckets.append(torch.randint(0, dim, (n,), generator=gen).to(p.device))
            self.signs.append((torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(p.device, torch.float32))

    def __call__(self, grads):
        import torch

        out = torch.zeros(self.dim, device=self.buckets[0].device)  # (dim,)
        for g, b, s in zip(grads, self.buckets, self.signs):
            out.index_add_(0, b, g.reshape(-1).float() * s)
        return out


def projected_gradients(model, base: BaseModel, examples: Sequence[TrainingExample], *,
                        config: InfluenceConfig = InfluenceConfig(), train_config: TrainConfig = TrainConfig(),
                        sketch: Optional[_Sketch] = None):
    """``(len(examples), dim)``: the sketched gradient of each example's loss w.r.t. LoRA weights.

    ``model`` is a PEFT model whose trainable parameters are the LoRA weights.
    """
    import torch

    params = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    if not params:
        raise ValueError("the model has no trainable LoRA parameters; load the adapter with is_trainable=True")
    sketch = sketch or _Sketch(params, config.dim, config.seed)
    rows = []
    was_training = model.training
    model.eval()  # no dropout: the gradient of the model that is used
    try:
        for example in examples:
            ids, labels, mask = _collate([encode(base, example, train_config)], base.tokenizer.pad_token_id,
                                         base.device)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            grads = torch.autograd.grad(loss, params)
            rows.append(sketch(grads))
    finally:
        model.train(was_training)
    return torch.stack(rows), sketch


def influence_scores(base: BaseModel, adapter_path, train: Sequence[TrainingExample],
                     queries: Sequence[TrainingExample], *, config: InfluenceConfig = InfluenceConfig(),
                     train_config: TrainConfig = TrainConfig()):
    """``(len(train), len(queries))`` cosine similarities of sketched LoRA gradients."""
    import copy

    import torch
    from peft import PeftModel

    if not queries:
        raise ValueError("influence needs at least one query example (the user's recent cells)")
    with base.lock:
        copied = copy.deepcopy(base.model)
    model = PeftModel.from_pretrained(copied, str(adapter_path), is_trainable=True)
    g_train, sketch = projected_gradients(model, base, train, config=config, train_config=train_config)
    g_query, _ = projected_gradients(model, base, queries, config=config, train_config=train_config, sketch=sketch)
    g_train = torch.nn.functional.normalize(g_train, dim=1)  # (N, dim)
    g_query = torch.nn.functional.normalize(g_query, dim=1)  # (Q, dim)
    return g_train @ g_query.T  # (N, Q)
