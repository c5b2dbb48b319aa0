"""SPA variants: partition the training examples by their influence profiles, one adapter each.

Each training example has an influence vector over the query examples (``influence``); examples
that help the same queries land together (k-means on the normalised vectors, with a balancing
step so no group is too small to train on). One adapter per group gives K specialists whose
candidates differ where the data does, rather than where sampling noise does.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from .examples import TrainingExample
from .train import BaseModel, TrainConfig, planned_steps, train_adapter

__all__ = ["partition", "train_variants", "VariantSet", "variant_name"]

log = logging.getLogger(__name__)


def variant_name(k: int) -> str:
    return f"variant-{k}"


def partition(scores, k: int, *, seed: int = 0, iterations: int = 25, min_size: int = 2) -> list[list[int]]:
    """Split rows of ``scores`` ``(N, Q)`` into ``k`` groups of example indices (k-means, balanced).

    Deterministic for a given seed. Groups are ordered by their mean influence (the first group
    helps the queries most).
    """
    import torch

    n = scores.shape[0]
    if k < 1 or n < k:
        raise ValueError(f"cannot split {n} examples into {k} variants; use fewer variants or more notebooks")
    x = torch.nn.functional.normalize(scores.float() - scores.float().mean(0, keepdim=True), dim=1)  # (N, Q)
    # Farthest-point initialisation: deterministic and spread out.
    gen = torch.Generator().manual_seed(seed)
    centres = [int(torch.randint(0, n, (1,), generator=gen))]
    for _ in range(1, k):
        dist = torch.cdist(x, x[centres]).min(dim=1).values
        dist[centres] = -1
        centres.append(int(dist.argmax()))
    c = x[centres].clone()  # (k, Q)
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        assign = torch.cdist(x, c).argmin(dim=1)  # (N,)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    # Balance: move the examples closest to a small group's centre into it, from the largest groups.
    floor = min(min_size, n // k)
    dist = torch.cdist(x, c)  # (N, k)
    for j in range(k):
        while int((assign == j).sum()) < floor:
            sizes = torch.bincount(assign, minlength=k)
            donors = [i for i in range(n) if assign[i] != j and sizes[assign[i]] > floor]
            best = min(donors, key=lambda i: float(dist[i, j]))
            assign[best] = j
    mean_score = scores.float().mean(1)  # (N,)
    groups = [[i for i in range(n) if assign[i] == j] for j in range(k)]
    groups.sort(key=lambda g: -float(mean_score[g].mean()))
    return groups


@dataclass
class VariantSet:
    folder: Path  # holds variant-0/, variant-1/, ... (each a PEFT adapter)
    groups: list[list[int]]


def train_variants(base: BaseModel, examples: Sequence[TrainingExample], scores, out_dir: str | Path, *, k: int,
                   config: TrainConfig = TrainConfig(),
                   progress: Optional[Callable[[int, int, float], None]] = None,
                   cancel: Optional[threading.Event] = None,
                   init_adapter: Optional[str | Path] = None) -> VariantSet:
    """Train ``k`` adapters, one per influence group, into ``out_dir/variant-<j>``.

    With ``init_adapter`` (the user's adapter trained on all the data) each variant starts from it
    and specialises on its group: a group alone is often too small to learn to write working code
    from scratch, and a variant that only writes broken code adds no useful diversity.
    """
    groups = partition(scores, k, seed=config.seed, min_size=max(2, len(examples) // (2 * k)))
    out_dir = Path(out_dir)
    planned = [planned_steps(config, len(group)) for group in groups]
    total = sum(planned)
    for j, group in enumerate(groups):
        def step(s, _total, loss, _done=sum(planned[:j])):
            if progress is not None:
                progress(_done + s, total, loss)
        train_adapter(base, [examples[i] for i in group], out_dir / variant_name(j), config=config,
                      progress=step, cancel=cancel, init_adapter=init_adapter)
        log.info("variant %d trained on %d examples", j, len(group))
    return VariantSet(folder=out_dir, groups=groups)
