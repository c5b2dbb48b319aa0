"""fLoRA: the training module, the on-disk format, and serving through the bank against the plain formula.

The oracle is the merged weight ``W0 ∘ (1 + s · flora_out @ flora_in)`` put into a copy of the base
model: the formula itself, independent of the module, the kernels and the bank. Tolerances as in
test_bank_peft: fp32 logits within 1e-4, bf16 within 6% of the logits' range.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from specgen_backend.lora import AdapterBank, AdapterBankConfig, AdapterError
from specgen_backend.lora.flora import FLoRAConfig, FLoRALinear, add_flora, save_flora

from .conftest import DEVICE, make_peft_adapters

FLORA_ADAPTERS = {
    "f-qv-r1": FLoRAConfig(r=1, alpha=1.0, target_modules=("q_proj", "v_proj")),
    "f-mlp-r4": FLoRAConfig(r=4, alpha=8.0, target_modules=("gate_proj", "down_proj")),
    "f-all-r2": FLoRAConfig(r=2, alpha=2.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "up_proj")),
}


def _make_flora(base, root, name, config, seed):
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    layers = add_flora(model, config)
    with torch.no_grad():
        for layer in layers.values():
            layer.flora_out.normal_(0.0, 0.5)  # trained adapters are not at their zero init
            layer.flora_in.normal_(1.0, 0.5)
    return save_flora(layers, root / name, config), layers


def _merged(base, layers, config):
    """Copy of base with each adapted weight replaced by W0 ∘ (1 + s · out @ in)."""
    merged = copy.deepcopy(base)
    with torch.no_grad():
        for name, layer in layers.items():
            w = merged.get_submodule(name).weight
            w.copy_(w * (1 + config.alpha / config.r * (layer.flora_out @ layer.flora_in)))
    return merged


@pytest.fixture(scope="module")
def flora_fixture(peft_fixture, tmp_path_factory):
    root = tmp_path_factory.mktemp("flora")
    folders, oracles = {}, {}
    for i, (name, config) in enumerate(FLORA_ADAPTERS.items()):
        folders[name], layers = _make_flora(peft_fixture.base, root, name, config, seed=10 + i)
        oracles[name] = _merged(peft_fixture.base, layers, config).eval()
    oracles[None] = peft_fixture.base
    return folders, oracles


def test_module_is_the_formula_and_trains():
    """FLoRALinear computes x (W0 ∘ (1 + s·A Bᵀ))ᵀ + bias, starts as the base layer, and only its vectors train."""
    torch.manual_seed(0)
    base = torch.nn.Linear(12, 7)
    layer = FLoRALinear(base, r=3, alpha=6.0)
    x = torch.randn(5, 12)
    torch.testing.assert_close(layer(x), base(x))  # flora_out starts at zero
    with torch.no_grad():
        layer.flora_out.normal_()
    want = x @ (base.weight * (1 + 2.0 * layer.flora_out @ layer.flora_in)).T + base.bias
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    layer(x).pow(2).sum().backward()
    assert base.weight.grad is None and layer.flora_in.grad is not None and layer.flora_out.grad.abs().sum() > 0


def test_on_disk_format(tmp_path, peft_fixture):
    """The folder holds adapter_config.json (peft_type FLORA, version 1) and <module>.flora_in/out tensors."""
    folder, _ = _make_flora(peft_fixture.base, tmp_path, "f", FLORA_ADAPTERS["f-qv-r1"], seed=0)
    meta = json.loads((folder / "adapter_config.json").read_text())
    assert meta["peft_type"] == "FLORA" and meta["format_version"] == 1 and meta["r"] == 1
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    assert tensors["model.layers.0.self_attn.q_proj.flora_in"].shape == (1, 64)
    assert tensors["model.layers.1.self_attn.v_proj.flora_out"].shape == (32, 1)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temp folder left behind"


def _mixed_bank(peft_fixture, flora_folders, backend, dtype=torch.float32):
    model = copy.deepcopy(peft_fixture.base).to(dtype)
    bank = AdapterBank.attach(model, AdapterBankConfig(max_adapters=5, max_rank=64, backend=backend))
    for name, folder in flora_folders.items():
        bank.load(name, folder)
    bank.load("qv-r8", peft_fixture.folders["qv-r8"])  # an additive LoRA in the same batch
    return model, bank


ROWS = ["f-qv-r1", None, "f-mlp-r4", "qv-r8", "f-all-r2", "f-qv-r1", None, "f-mlp-r4"]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@torch.no_grad()
def test_mixed_flora_and_lora_rows_match_formula(peft_fixture, flora_fixture, backend):
    """fLoRA, LoRA and base rows in one batch: fLoRA rows equal the merged formula, the LoRA row PEFT."""
    folders, oracles = flora_fixture
    model, bank = _mixed_bank(peft_fixture, folders, backend)
    ids = torch.randint(3, 256, (len(ROWS), 7), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    with bank.rows(ROWS):
        logits = model(input_ids=ids).logits
    peft_model = peft_fixture.peft_model()
    peft_model.set_adapter("qv-r8")
    for i, adapter in enumerate(ROWS):
        oracle = peft_model if adapter == "qv-r8" else oracles[adapter]
        want = oracle(input_ids=ids[i : i + 1]).logits[0]
        torch.testing.assert_close(logits[i], want, atol=1e-4, rtol=0, msg=lambda m: f"row {i} ({adapter}): {m}")
        if adapter is not None:
            assert (want - peft_fixture.base(input_ids=ids[i : i + 1]).logits[0]).abs().max() > 0.5


@pytest.mark.parametrize("backend", ["torch", "triton"])
@torch.no_grad()
def test_greedy_decode_with_flora_rows_matches_formula(peft_fixture, flora_fixture, backend):
    """generate() of 8 rows mixing fLoRA, LoRA and base gives each fLoRA/base row the formula model's 32 tokens."""
    folders, oracles = flora_fixture
    model, bank = _mixed_bank(peft_fixture, folders, backend)
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 256, (n,), generator=gen) for n in (3, 8, 5, 2, 8, 6, 1, 4)]
    width = max(len(p) for p in prompts)
    ids, mask = torch.zeros(8, width, dtype=torch.long), torch.zeros(8, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :], mask[i, width - len(p) :] = p, 1
    options = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0, eos_token_id=None)
    with bank.rows(ROWS):
        out = model.generate(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE), **options)[:, width:]
    for i, (adapter, p) in enumerate(zip(ROWS, prompts, strict=True)):
        if adapter == "qv-r8":
            continue  # covered against PEFT in test_bank_peft
        row = p[None].to(DEVICE)
        want = oracles[adapter].generate(input_ids=row, attention_mask=torch.ones_like(row), **options)[0, len(p) :]
        assert out[i].tolist() == want.tolist(), f"row {i} ({adapter}) decoded differently"


@pytest.mark.parametrize("backend", ["torch", "triton"])
@torch.no_grad()
def test_bf16_flora_rows(peft_fixture, flora_fixture, backend):
    """In bf16, fLoRA rows stay within rounding of the merged formula run in bf16."""
    folders, oracles = flora_fixture
    model, bank = _mixed_bank(peft_fixture, folders, backend, torch.bfloat16)
    ids = torch.randint(3, 256, (len(ROWS), 5), generator=torch.Generator().manual_seed(5)).to(DEVICE)
    with bank.rows(ROWS):
        logits = model(input_ids=ids).logits.float()
    for i, adapter in enumerate(ROWS):
        if adapter == "qv-r8":
            continue
        want = copy.deepcopy(oracles[adapter]).to(torch.bfloat16)(input_ids=ids[i : i + 1]).logits[0].float()
        err = (logits[i] - want).abs().max() / want.abs().max()
        assert err <= 0.06, f"row {i} ({adapter}): relative error {err:.3g}"


def test_bad_flora_folders(peft_fixture, tmp_path):
    """An fLoRA folder with a wrong version or a missing tensor is refused with the reason."""
    folder, _ = _make_flora(peft_fixture.base, tmp_path, "f", FLORA_ADAPTERS["f-qv-r1"], seed=0)
    bank = AdapterBank.attach(copy.deepcopy(peft_fixture.base), AdapterBankConfig(backend="torch"))
    meta = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(AdapterError, match="format_version"):
        bank.load("f", folder)
    (folder / "adapter_config.json").write_text(json.dumps({**meta, "r": 3}))
    with pytest.raises(AdapterError, match="rank"):
        bank.load("f", folder)
    assert bank.loaded() == []


def test_peft_adapter_unchanged_by_flora_helpers(tmp_path, peft_fixture):
    """make_peft_adapters still yields loadable PEFT folders next to fLoRA ones (same bank, both kinds)."""
    folders = make_peft_adapters(peft_fixture.base, tmp_path, {"p": dict(r=2, target_modules=["q_proj"])})
    bank = AdapterBank.attach(copy.deepcopy(peft_fixture.base), AdapterBankConfig(backend="torch"))
    bank.load("p", folders["p"])
    f, _ = _make_flora(peft_fixture.base, tmp_path, "f", FLORA_ADAPTERS["f-qv-r1"], seed=0)
    bank.load("f", f)
    assert bank.loaded() == ["p", "f"]
