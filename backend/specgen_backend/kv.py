"""The KV cache across transformers versions: what a forward calls it, and where its output keeps it.

transformers 5.x renamed the cache of a causal LM's forward from ``past_key_values`` to ``cache``
(5.24 warns with a ``FutureWarning`` that the old name goes in 5.40), and the output's field with it
(``out.past_key_values`` then logs a deprecation and reads ``out.cache``); 4.x knows only the old
names. Every forward
this package runs with a cache goes through here, so that one place knows which name the loaded
model takes:

- ``cache_keyword(model)``: ``"cache"`` or ``"past_key_values"``, read once per model class from
  its ``forward`` signature (a PEFT wrapper's forward takes ``**kwargs``: its base model's is read);
- ``cache_kwargs(model, cache)``: ``{that name: cache}`` to splat into the call;
- ``output_cache(out)``: the cache a forward returned, from whichever field its output class has;
- ``layer_of(keys, values)``: a ``DynamicLayer`` holding those tensors as they are (views, no copy).

The caches themselves are the ``Cache`` classes (``DynamicCache`` of ``DynamicLayer``), never the
legacy tuples, whose support transformers has dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

__all__ = ["cache_keyword", "cache_kwargs", "layer_of", "output_cache"]

# The two names a forward has had for its KV cache, newest first.
_NAMES = ("cache", "past_key_values")


def cache_keyword(model) -> str:
    """The keyword ``model``'s forward takes its KV cache under: ``"cache"`` or ``"past_key_values"``."""
    inner = model
    # PeftModel / LoraModel wrappers forward **kwargs to the transformers model inside them.
    for _ in range(4):
        name = _forward_keyword(type(inner))
        if name is not None:
            return name
        unwrap = getattr(inner, "get_base_model", None)
        nxt = unwrap() if callable(unwrap) else getattr(inner, "model", None)
        if nxt is None or nxt is inner:
            break
        inner = nxt
    return _library_keyword()


def cache_kwargs(model, cache) -> dict[str, Any]:
    """``{keyword: cache}`` for ``model(**…)``; ``cache`` a ``transformers.Cache`` (None: the model makes one)."""
    return {cache_keyword(model): cache}


def output_cache(out):
    """The KV cache a forward returned in ``out`` (a ``ModelOutput``), read without the deprecated alias."""
    return getattr(out, _output_field(type(out)))


def layer_of(keys, values):
    """A ``DynamicLayer`` holding ``keys`` and ``values`` (each (B, H, T, D)) themselves, not a copy.

    ``DynamicLayer.update`` on an empty slice initialises the layer (device and dtype) through its
    public method, whatever arguments its ``lazy_initialization`` takes in this version; the tensors
    are then set as they are (``update`` itself would concatenate: a copy).
    """
    from transformers.cache_utils import DynamicLayer

    layer = DynamicLayer()
    layer.update(keys[:, :, :0], values[:, :, :0])
    layer.keys, layer.values = keys, values
    return layer


@functools.lru_cache(maxsize=None)
def _forward_keyword(cls) -> str | None:
    try:
        parameters = inspect.signature(cls.forward).parameters  # follows the deprecation wrapper's __wrapped__
    except (AttributeError, TypeError, ValueError):
        return None
    return next((name for name in _NAMES if name in parameters), None)


@functools.lru_cache(maxsize=None)
def _library_keyword() -> str:
    """The name this transformers uses, for a model whose forward names neither (``**kwargs`` all the way down)."""
    from transformers import GenerationMixin

    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return next((name for name in _NAMES if name in parameters), "past_key_values")


@functools.lru_cache(maxsize=None)
def _output_field(cls) -> str:
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    field = next((name for name in _NAMES if name in names), None)
    if field is None:
        raise TypeError(f"{cls.__name__} has no KV cache field ({' or '.join(_NAMES)}); is it a causal LM's output?")
    return field
