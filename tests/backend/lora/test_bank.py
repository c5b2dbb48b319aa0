"""AdapterBank bookkeeping: slots, LRU eviction, hot load/unload, memory, and errors that say the fix."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from specgen_backend.lora import AdapterBank, AdapterBankConfig, AdapterError

from .conftest import DEVICE

IDS = torch.arange(3, 9).reshape(1, 6)


def _attach(fixture, **options):
    model = copy.deepcopy(fixture.base)
    return model, AdapterBank.attach(model, AdapterBankConfig(backend="torch", **options))


@torch.no_grad()
def _logits(model, bank, adapter):
    with bank.rows([adapter]):
        return model(input_ids=IDS.to(DEVICE)).logits


def test_lru_eviction_keeps_recently_used(peft_fixture):
    """With 2 slots, loading a third adapter evicts the least recently *used*, not the oldest loaded."""
    model, bank = _attach(peft_fixture, max_adapters=2)
    f = peft_fixture.folders
    bank.load("a", f["qv-r8"])
    bank.load("b", f["all-r1"])
    _logits(model, bank, "a")  # a is now more recent than b
    bank.load("c", f["layer1-r16"])
    assert bank.loaded() == ["a", "c"]
    with pytest.raises(AdapterError, match="not loaded"):
        _logits(model, bank, "b")


@torch.no_grad()
def test_reused_slot_serves_only_the_new_adapter(peft_fixture):
    """An adapter loaded into an evicted slot gives exactly its own output: no leftovers of the previous one."""
    f = peft_fixture.folders
    fresh_model, fresh = _attach(peft_fixture, max_adapters=1)
    fresh.load("x", f["layer1-r16"])
    want = _logits(fresh_model, fresh, "x")
    model, bank = _attach(peft_fixture, max_adapters=1)
    bank.load("big", f["mlp-r64-rs"])  # touches layers that layer1-r16 does not
    bank.load("x", f["layer1-r16"])
    assert bank.loaded() == ["x"]
    assert torch.equal(_logits(model, bank, "x"), want)


@torch.no_grad()
def test_unload_and_reload_while_serving(peft_fixture):
    """Unload frees the slot; loading a name again replaces its weights in place without a restart."""
    f = peft_fixture.folders
    model, bank = _attach(peft_fixture, max_adapters=2)
    bank.load("u", f["qv-r8"])
    first = _logits(model, bank, "u")
    bank.load("u", f["all-r1"])  # e.g. a retrained adapter hot-loaded under the same name
    assert bank.loaded() == ["u"]
    assert not torch.allclose(_logits(model, bank, "u"), first)
    bank.unload("u")
    assert bank.loaded() == []
    with pytest.raises(AdapterError, match="not loaded"):
        bank.unload("u")


def test_memory_grows_only_for_targeted_layers(peft_fixture):
    """Bank memory is zero until an adapter loads, then covers only the layers it targets."""
    model, bank = _attach(peft_fixture, max_adapters=4, max_rank=8)
    assert bank.memory_bytes() == 0
    bank.load("qv", peft_fixture.folders["qv-r8"])
    # q_proj 64→64 and v_proj 64→32 in 2 layers: 4 slots × rank 8 × (in + out) fp32, + scales and ranks
    want = 2 * (4 * (8 * (64 + 64) * 4 + 8) + 4 * (8 * (64 + 32) * 4 + 8))
    assert bank.memory_bytes() == want


def test_adapter_inside_batch_is_not_evicted(peft_fixture):
    """Loading while every slot is used by the running batch fails with a message naming the fix."""
    f = peft_fixture.folders
    model, bank = _attach(peft_fixture, max_adapters=1)
    bank.load("a", f["qv-r8"])
    with bank.rows(["a"]):
        with pytest.raises(AdapterError, match="max_adapters"):
            bank.load("b", f["all-r1"])
        with pytest.raises(AdapterError, match="after the batch"):
            bank.unload("a")
    assert bank.loaded() == ["a"]


def test_rank_above_bank_limit_is_refused(peft_fixture):
    """A rank-64 adapter in a max_rank=16 bank is refused, the bank left as it was, and the fix named."""
    model, bank = _attach(peft_fixture, max_rank=16)
    with pytest.raises(AdapterError, match="raise AdapterBankConfig.max_rank"):
        bank.load("big", peft_fixture.folders["mlp-r64-rs"])
    assert bank.loaded() == [] and bank.memory_bytes() == 0


def test_unwrapped_target_and_bad_folders(peft_fixture, tmp_path):
    """Targets the bank does not wrap, missing files, non-LoRA types and DoRA all fail with a clear message."""
    f = peft_fixture.folders
    model, bank = _attach(peft_fixture, target_modules=["q_proj"])
    with pytest.raises(AdapterError, match="target_modules"):
        bank.load("qv", f["qv-r8"])
    with pytest.raises(AdapterError, match="does not exist"):
        bank.load("nope", tmp_path / "nope")
    bad = tmp_path / "dora"
    shutil.copytree(f["qv-r8"], bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(AdapterError, match="DoRA"):
        bank.load("dora", bad)
    (bad / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(AdapterError, match="only LORA and FLORA"):
        bank.load("ia3", bad)
    (bad / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="safetensors"):
        bank.load("nofile", bad)
    assert bank.loaded() == []


def test_adapter_for_another_model_is_refused(peft_fixture, tmp_path):
    """An adapter whose shapes do not fit the model says it was trained for a different base model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .conftest import make_peft_adapters

    narrow = LlamaForCausalLM(LlamaConfig(
        vocab_size=256, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1,
    ))  # fmt: skip
    folders = make_peft_adapters(narrow, tmp_path, {"narrow": dict(r=2, target_modules=["q_proj"])})
    model, bank = _attach(peft_fixture)
    with pytest.raises(AdapterError, match="different base model"):
        bank.load("narrow", folders["narrow"])


def test_rows_errors(peft_fixture):
    """Unknown adapters, nested blocks and a batch size other than len(rows) are explained."""
    model, bank = _attach(peft_fixture)
    bank.load("a", peft_fixture.folders["qv-r8"])
    with pytest.raises(AdapterError, match="bank.load"):
        with bank.rows(["zzz"]):
            pass
    with bank.rows(["a"]):
        with pytest.raises(AdapterError, match="nested"):
            with bank.rows(["a"]):
                pass
    with bank.rows(["a", None]), pytest.raises(ValueError, match="one entry per row"):
        model(input_ids=IDS.to(DEVICE))


def test_detach_restores_plain_linears(peft_fixture):
    """detach() puts nn.Linear layers back and the model computes the base logits again."""
    model, bank = _attach(peft_fixture)
    bank.load("a", peft_fixture.folders["qv-r8"])
    bank.detach()
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS.to(DEVICE)).logits, peft_fixture.base(input_ids=IDS.to(DEVICE)).logits)
