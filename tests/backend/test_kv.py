"""The KV cache helper (``kv.py``): the keyword this transformers takes, and decoding with the cache it fills."""

from __future__ import annotations

import inspect
import logging
import warnings

import pytest
from specgen_backend.kv import cache_keyword, cache_kwargs, layer_of, output_cache
from specgen_backend.prefix_cache import PrefixCache, restore

PROMPT = [5, 17, 42, 99, 7, 64, 23, 11, 80, 3]
STEPS = 12


@pytest.fixture(scope="module")
def model(tiny_model):
    from specgen_backend.loading import load_model

    return load_model(tiny_model, device="cpu", dtype="float32").model


def test_the_keyword_is_the_one_the_installed_forward_takes(model):
    """The keyword is the cache parameter the loaded model's forward names, the new one where it has both."""
    parameters = inspect.signature(type(model).forward).parameters
    assert cache_keyword(model) == ("cache" if "cache" in parameters else "past_key_values")
    assert cache_keyword(model) in parameters


def test_a_peft_wrapper_takes_the_keyword_of_its_base_model(model):
    """A PEFT model (forward(**kwargs)) is asked for the keyword of the transformers model inside it."""
    import copy

    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PEFT's own is_gradient_checkpointing read (see pyproject)
        wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"]))
    assert "cache" not in inspect.signature(type(wrapped).forward).parameters
    assert cache_keyword(wrapped) == cache_keyword(model)


def test_the_cache_passed_is_the_cache_filled_without_deprecation_warnings(model):
    """A DynamicCache handed over under the helper's keyword is the one the model fills (no FutureWarning)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error", FutureWarning)
        out = model(input_ids=torch.tensor([PROMPT]), use_cache=True, **cache_kwargs(model, cache))
    # A keyword the forward silently swallowed into **kwargs would leave this cache empty.
    assert output_cache(out) is cache
    assert cache.get_seq_length() == len(PROMPT)


def test_reading_the_output_cache_logs_no_deprecation(model):
    """``output_cache`` reads the output's own field, not the ``past_key_values`` alias that logs a deprecation."""
    import torch

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # transformers logs each message once per process
    try:
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([PROMPT]), use_cache=True)
            assert output_cache(out) is not None
    finally:
        root.removeHandler(handler)
    assert not [r for r in records if "deprecated" in r.getMessage()], [r.getMessage() for r in records]


def _greedy_without_cache(model, prompt: list[int]):
    """(the greedy tokens, each step's last logits (STEPS, V)), rerunning the whole sequence each step."""
    import torch

    ids, steps = list(prompt), []
    with torch.inference_mode():
        for _ in range(STEPS):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits  # (1, T, V)
            steps.append(logits[0, -1])
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :], torch.stack(steps)


def _greedy_with_cache(model, prompt: list[int], cache=None, start: int = 0):
    """The same through a cache already holding ``prompt[:start]``: only ``prompt[start:]``, then one token a step."""
    import torch

    new, steps = [], []
    with torch.inference_mode():
        positions = torch.arange(start, len(prompt)).view(1, -1)
        out = model(input_ids=torch.tensor([prompt[start:]]), position_ids=positions, use_cache=True,
                    **cache_kwargs(model, cache))  # fmt: skip
        for step in range(STEPS):
            steps.append(out.logits[0, -1])
            new.append(int(out.logits[0, -1].argmax()))
            cache = output_cache(out)
            assert cache.get_seq_length() == len(prompt) + step
            position = torch.tensor([[len(prompt) + step]])
            out = model(input_ids=torch.tensor([[new[-1]]]), position_ids=position, use_cache=True,
                        **cache_kwargs(model, cache))  # fmt: skip
    return new, torch.stack(steps)


def _assert_same(got, expected) -> None:
    import torch

    assert got[0] == expected[0]
    # The tiny random model's greedy tokens barely change; the logits show that every step saw the same context.
    torch.testing.assert_close(got[1], expected[1], rtol=1e-4, atol=1e-4)


def test_greedy_decoding_with_the_cache_equals_decoding_without_it(model):
    """Token by token through the cache gives the greedy tokens and logits of rerunning the whole sequence."""
    _assert_same(_greedy_with_cache(model, PROMPT), _greedy_without_cache(model, PROMPT))


def test_decoding_from_a_restored_prefix_equals_decoding_without_a_cache(model):
    """A prefix-cache entry cut to 6 tokens (views, no copy) continues to the same greedy tokens."""
    import torch

    with torch.inference_mode():
        full = output_cache(model(input_ids=torch.tensor([PROMPT]), use_cache=True))
    store = PrefixCache(max_entries=4, max_bytes=1 << 30)
    store.store("k", torch.tensor(PROMPT), full)
    entry, reuse = store.lookup("k", torch.tensor(PROMPT[:6] + [1, 2]))
    assert reuse == 6
    cut = restore(entry, reuse)
    assert cut.layers[0].keys.data_ptr() == entry.layers[0][0].data_ptr()  # a view of the stored tensor
    _assert_same(_greedy_with_cache(model, PROMPT, cut, start=reuse), _greedy_without_cache(model, PROMPT))


def test_layer_of_keeps_the_tensors_themselves():
    """``layer_of`` holds the given tensors (no copy) and reports their length."""
    import torch

    keys, values = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)  # (B, H, T, D)
    layer = layer_of(keys, values)
    assert layer.keys is keys and layer.values is values
    assert layer.get_seq_length() == 5 and layer.is_initialized


def test_an_output_without_a_cache_field_is_a_clear_error():
    """An output class with no cache field is refused with what it lacks."""
    from transformers.modeling_outputs import BaseModelOutput

    with pytest.raises(TypeError, match="has no KV cache field"):
        output_cache(BaseModelOutput())
