"""Compare adapters on held-out examples: greedy completions, exact match and edit similarity.

Completions are generated with the serving prompt (``examples.render``) and cut at the serving
stop strings, so the numbers describe what the user would have been shown. Sampling across
several adapters in one batch (``sample``) uses PEFT's mixed-adapter batches: each row names its
adapter, as the serving bank does.

The executable rate (running each completion in a fork of a kernel holding the notebook's data)
needs the Jupyter side's validator and is not computed here.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..prompt import find_stop
from .examples import TrainingExample, render
from .train import BaseModel

__all__ = ["ALPHA", "Metrics", "edit_similarity", "load_adapters", "complete", "sample", "evaluate", "not_worse"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metrics:
    exact_match: float  # share of completions equal to the target (whitespace-trimmed)
    edit_similarity: float  # mean difflib ratio between completion and target, in [0, 1]
    count: int
    predictions: list[str] = field(default_factory=list, repr=False, compare=False)
    # Share of completions that ran after their notebook's earlier cells (measured by the Jupyter
    # side, where the data is); None when it was not measured.
    executable_rate: Optional[float] = None

    def as_dict(self) -> dict:
        """The shape of ``protocol.EvalMetrics``."""
        return {"exact_match": self.exact_match, "edit_similarity": self.edit_similarity, "count": self.count,
                "executable_rate": self.executable_rate}


def edit_similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def load_adapters(base: BaseModel, adapters: dict[str, str | Path]):
    """A PEFT model over ``base`` (shared weights, not copied) with the named adapters loaded.

    One fLoRA adapter is wrapped into ``base.model`` in place instead (``_unload`` takes it out);
    mixed-adapter batches are PEFT's, so fLoRA adapters cannot be sampled together.
    """
    from peft import PeftModel

    from ..lora.flora import is_flora, load_flora

    items = list(adapters.items())
    if not items:
        return base.model
    if any(is_flora(path) for _, path in items):
        if len(items) > 1:
            raise ValueError("fLoRA adapters are evaluated one at a time; mixed-adapter sampling needs PEFT LoRA")
        load_flora(base.model, items[0][1])
        base.model.eval()
        return base.model
    name, path = items[0]
    model = PeftModel.from_pretrained(base.model, str(path), adapter_name=name)
    for name, path in items[1:]:
        model.load_adapter(str(path), adapter_name=name)
    model.eval()
    return model


def _unload(model, base: BaseModel) -> None:
    # PeftModel.from_pretrained (and load_flora) inject layers into the shared base model in
    # place; take them out again so the next caller sees the plain base.
    from ..lora.flora import remove_flora

    if model is not base.model:
        model.unload()
    else:
        remove_flora(base.model)


def _prompts(base: BaseModel, examples: Sequence[TrainingExample], max_prompt_tokens: int):
    tok = base.tokenizer
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return [render(e, fim=base.fim, count_tokens=count, max_prompt_tokens=max_prompt_tokens) for e in examples]


def _generate(base: BaseModel, model, prompts: list[str], stops: list[tuple[str, ...]], *, max_new_tokens: int,
              temperature: float, seed: int, adapter_names: Optional[list[str]] = None) -> list[str]:
    import torch

    tok = base.tokenizer
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(base.device)
    kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        kwargs.update(do_sample=False)
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, **kwargs)  # (B, T_prompt + T_new)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    cut = []
    for text, stop in zip(texts, stops):
        k = find_stop(text, stop)
        cut.append((text if k < 0 else text[:k]).strip("\n"))
    return cut


def complete(base: BaseModel, adapter: Optional[str | Path], examples: Sequence[TrainingExample], *,
             max_new_tokens: int = 48, max_prompt_tokens: int = 384, batch_size: int = 1) -> list[str]:
    """Greedy completion of each example with ``adapter`` (``None``: the base model).

    One prompt per batch by default: left padding shifts positions in some models' ``generate``,
    which changes what small models write; the serving engine does not pad that way.
    """
    with base.lock:
        return _complete(base, adapter, examples, max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                         batch_size=batch_size)


def _complete(base, adapter, examples, *, max_new_tokens, max_prompt_tokens, batch_size):
    model = load_adapters(base, {"candidate": adapter} if adapter is not None else {})
    try:
        rendered = _prompts(base, examples, max_prompt_tokens)
        out: list[str] = []
        for i in range(0, len(rendered), batch_size):
            chunk = rendered[i: i + batch_size]
            out.extend(_generate(base, model, [p for p, _ in chunk], [s for _, s in chunk],
                                 max_new_tokens=max_new_tokens, temperature=0.0, seed=0))
        return out
    finally:
        _unload(model, base)


def sample(base: BaseModel, adapters: dict[str, str | Path], example: TrainingExample, rows: Sequence[str], *,
           temperature: float = 0.8, max_new_tokens: int = 48, max_prompt_tokens: int = 384, seed: int = 0) -> list[str]:
    """One candidate per entry of ``rows`` (an adapter name each), all in one batch."""
    with base.lock:
        model = load_adapters(base, adapters)
        try:
            prompt, stops = _prompts(base, [example], max_prompt_tokens)[0]
            return _generate(base, model, [prompt] * len(rows), [stops] * len(rows), max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed, adapter_names=list(rows))
        finally:
            _unload(model, base)


def evaluate(base: BaseModel, adapter: Optional[str | Path], examples: Sequence[TrainingExample], **kwargs) -> Metrics:
    predictions = complete(base, adapter, examples, **kwargs)
    targets = [e.target.strip() for e in examples]
    n = max(1, len(examples))
    return Metrics(
        exact_match=sum(p.strip() == t for p, t in zip(predictions, targets)) / n,
        edit_similarity=sum(edit_similarity(p.strip(), t) for p, t in zip(predictions, targets)) / n,
        count=len(examples),
        predictions=predictions,
    )


# The publish rule's significance level: a rate is "worse" when chance alone would lose that many
# held-out cells less often than this.
ALPHA = 0.05


def not_worse(new: Metrics, current: Metrics, *, tolerance: float = 1e-9, alpha: float = ALPHA) -> bool:
    """Publish rule: the candidate's completions are no further from the targets on average, and it
    loses no rate by more than chance explains (a tie publishes: the newer data is the user's latest).

    Edit similarity is the one continuous measure (an exact match scores 1.0 in it): it may not
    drop at all. Exact match and the executable rate count cells, and on twenty held-out cells
    one cell that flips is 0.05 of either: the strict rule ("no metric drops") refused adapters
    whose edit similarity rose from 0.41 to 0.69 because one exact match turned into a near
    miss. A rate is worse only when the cells it lost are significant under a one-sided sign
    test. The rates carry no per-cell pairing, so the test assumes the fewest changed cells
    that give the drop (all lost, none gained): that is the smallest p-value the drop could
    have, so the rule refuses at least whenever the paired test would. At ``alpha`` 0.05 that
    is five cells or more (0.5**5 = 0.031); a rate on fewer evaluable cells than ``count`` is
    counted over ``count``, which overstates its loss, never understates it.

    The executable rate counts when both sides have one.
    """
    if new.edit_similarity < current.edit_similarity - tolerance:
        return False
    rates = [(new.exact_match, current.exact_match)]
    if new.executable_rate is not None and current.executable_rate is not None:
        rates.append((new.executable_rate, current.executable_rate))
    n = max(new.count, current.count, 1)
    return not any(_significant_loss(round((was - now) * n), alpha) for now, was in rates)


def _significant_loss(cells: int, alpha: float) -> bool:
    """Whether losing ``cells`` held-out cells and gaining none is unlikely by chance: a one-sided
    sign test on ``cells`` changed cells, all of them lost (p = 0.5 ** cells)."""
    return cells > 0 and 0.5 ** cells <= alpha
