"""A mixed batch through the bank equals PEFT's PeftModel run on each row alone.

Adapters are created and saved by PEFT itself (see ``conftest.PEFT_ADAPTERS``: ranks 1–64, five
target-module sets, rsLoRA, rank_pattern/alpha_pattern, layers_to_transform). Tolerances: fp32
logits within 1e-4 absolute (observed ~1e-5; logits are O(5) and each adapter moves them by O(5));
bf16/fp16 within 6%/2% of the logits' range, the rounding of one half-precision forward pass.
"""

from __future__ import annotations

import copy

import pytest
import torch
from specgen_backend.lora import AdapterBank, AdapterBankConfig

from .conftest import DEVICE, PEFT_ADAPTERS

BACKENDS = ["torch", "triton"]
ROWS = ["qv-r8", None, "all-r1", "mlp-r64-rs", "attn-patterns", "qv-r8", None, "layer1-r16"]  # 8 rows, 5 adapters


def _bank(fixture, backend, dtype=torch.float32):
    model = copy.deepcopy(fixture.base).to(dtype)
    bank = AdapterBank.attach(model, AdapterBankConfig(max_adapters=len(PEFT_ADAPTERS), max_rank=64, backend=backend))
    for name, folder in fixture.folders.items():
        bank.load(name, folder)
    return model, bank


def _peft_row(peft_model, adapter, **inputs):
    if adapter is None:
        with peft_model.disable_adapter():
            return peft_model(**inputs).logits
    peft_model.set_adapter(adapter)
    return peft_model(**inputs).logits


@pytest.mark.parametrize("backend", BACKENDS)
@torch.no_grad()
def test_mixed_prefill_logits_match_peft_row_by_row(peft_fixture, backend):
    """Ragged rows (right-padded), each with its own adapter or none: every row's logits equal PEFT's alone."""
    model, bank = _bank(peft_fixture, backend)
    peft_model = peft_fixture.peft_model()
    gen = torch.Generator().manual_seed(0)
    lengths = [11, 3, 7, 11, 1, 5, 9, 2]
    ids = torch.zeros(len(ROWS), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, 256, (n,), generator=gen)
        mask[i, :n] = 1
    ids, mask = ids.to(DEVICE), mask.to(DEVICE)
    with bank.rows(ROWS):
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
    for i, (adapter, n) in enumerate(zip(ROWS, lengths, strict=True)):
        want = _peft_row(peft_model, adapter, input_ids=ids[i : i + 1, :n])[0]
        torch.testing.assert_close(logits[i, :n], want, atol=1e-4, rtol=0, msg=lambda m: f"row {i} ({adapter}): {m}")
        if adapter is not None:  # the adapter really changes this row, so the comparison means something
            base = _peft_row(peft_model, None, input_ids=ids[i : i + 1, :n])[0]
            assert (want - base).abs().max() > 0.5


@pytest.mark.parametrize("backend", BACKENDS)
@torch.no_grad()
def test_greedy_decode_of_mixed_batch_matches_peft_alone(peft_fixture, backend):
    """generate() on 8 left-padded rows with 5 adapters and base rows gives each row PEFT's own 32 tokens."""
    model, bank = _bank(peft_fixture, backend)
    peft_model = peft_fixture.peft_model()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 256, (n,), generator=gen) for n in (6, 2, 9, 4, 9, 1, 5, 7)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    options = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0, eos_token_id=None)
    with bank.rows(ROWS):
        out = model.generate(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE), **options)[:, width:]
    assert out.shape == (8, 32)
    alone = []
    for adapter, p in zip(ROWS, prompts, strict=True):
        row = p[None].to(DEVICE)
        if adapter is None:
            with peft_model.disable_adapter():
                alone.append(
                    peft_model.generate(input_ids=row, attention_mask=torch.ones_like(row), **options)[0, len(p) :]
                )
        else:
            peft_model.set_adapter(adapter)
            alone.append(
                peft_model.generate(input_ids=row, attention_mask=torch.ones_like(row), **options)[0, len(p) :]
            )
    for i, adapter in enumerate(ROWS):
        assert out[i].tolist() == alone[i].tolist(), f"row {i} ({adapter}) decoded differently"
    # Different adapters on the same model must not all decode alike (else the test proves little).
    assert len({tuple(t.tolist()) for t in alone}) >= 5


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.06), (torch.float16, 0.02)])
@pytest.mark.parametrize("backend", BACKENDS)
@torch.no_grad()
def test_half_precision_rows_match_peft(peft_fixture, backend, dtype, tol):
    """In bf16 and fp16 each row's logits stay within half-precision rounding of PEFT's in the same dtype."""
    model, bank = _bank(peft_fixture, backend, dtype)
    peft_model = copy.deepcopy(peft_fixture.peft_model()).to(dtype)
    ids = torch.randint(3, 256, (len(ROWS), 6), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with bank.rows(ROWS):
        logits = model(input_ids=ids).logits.float()
    for i, adapter in enumerate(ROWS):
        want = _peft_row(peft_model, adapter, input_ids=ids[i : i + 1])[0].float()
        err = (logits[i] - want).abs().max() / want.abs().max()
        assert err <= tol, f"row {i} ({adapter}): relative error {err:.3g} > {tol}"


@pytest.mark.parametrize("backend", BACKENDS)
@torch.no_grad()
def test_empty_batch_and_base_only_batch(peft_fixture, backend):
    """An empty batch runs through a wrapped layer, and a batch of base rows is exactly the base model."""
    model, bank = _bank(peft_fixture, backend)
    layer = model.model.layers[0].self_attn.q_proj  # HF Llama itself cannot run a batch of 0 rows
    with bank.rows([]):
        assert layer(torch.zeros(0, 4, 64, device=DEVICE)).shape == (0, 4, 64)
    ids = torch.randint(3, 256, (3, 5), device=DEVICE)
    with bank.rows([None, None, None]):
        got = model(input_ids=ids).logits
    assert torch.equal(got, peft_fixture.base(input_ids=ids).logits)
