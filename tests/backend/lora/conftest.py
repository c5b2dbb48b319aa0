"""Run the Triton kernels in Triton's interpreter when there is no GPU.

``TRITON_INTERPRET`` is read when a kernel is decorated, i.e. when ``specgen_backend.lora.kernels``
is first imported, so it is set here, before any test module imports it.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


import copy  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def tiny_llama(*, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A 2-layer Llama with random weights and a 256-token vocabulary: fast even under the interpreter."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    # Random init leaves logits nearly flat; a larger lm_head makes greedy choices well separated.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model.to(dtype=dtype, device=DEVICE)


# Five PEFT LoRA configs: ranks 1 to 64, different target sets, rsLoRA, rank/alpha patterns.
PEFT_ADAPTERS = {
    "qv-r8": dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    "all-r1": dict(r=1, lora_alpha=2, target_modules="all-linear"),
    "mlp-r64-rs": dict(r=64, lora_alpha=32, target_modules=["gate_proj", "up_proj", "down_proj"], use_rslora=True),
    "attn-patterns": dict(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        rank_pattern={"layers.0.self_attn.q_proj": 16},
        alpha_pattern={"o_proj": 3},
    ),  # fmt: skip
    "layer1-r16": dict(r=16, lora_alpha=16, target_modules=["k_proj", "o_proj", "down_proj"], layers_to_transform=[1]),
}


@dataclass
class PeftFixture:
    base: torch.nn.Module  # pristine, never wrapped
    folders: dict[str, Path]
    _peft: object = field(default=None)

    def peft_model(self):
        """One PeftModel holding every adapter (built once)."""
        if self._peft is None:
            from peft import PeftModel

            names = list(self.folders)
            model = PeftModel.from_pretrained(
                copy.deepcopy(self.base), str(self.folders[names[0]]), adapter_name=names[0]
            )
            for name in names[1:]:
                model.load_adapter(str(self.folders[name]), adapter_name=name)
            self._peft = model.eval()
        return self._peft


def make_peft_adapters(base, root: Path, adapters: dict[str, dict], *, seed: int = 1) -> dict[str, Path]:
    """Create each adapter with PEFT itself (non-zero B) and save it; return the folders."""
    from peft import LoraConfig, get_peft_model

    folders = {}
    for i, (name, kwargs) in enumerate(adapters.items()):
        torch.manual_seed(seed + i)
        peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(init_lora_weights=False, **kwargs))
        with torch.no_grad():  # PEFT's non-zero init is tiny next to the base: make each adapter matter
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.mul_(20.0)
        folders[name] = root / name
        peft_model.save_pretrained(str(folders[name]))
    return folders


@pytest.fixture(scope="module")
def peft_fixture(tmp_path_factory) -> PeftFixture:
    base = tiny_llama()
    return PeftFixture(base=base, folders=make_peft_adapters(base, tmp_path_factory.mktemp("peft"), PEFT_ADAPTERS))
