"""Build a tiny causal LM on the spot: a byte-level BPE tokenizer trained on local Python source
and a Llama model with random weights.

Tests and benchmarks use it because no weights can be downloaded at test time; the backend loads
the result through the same ``from_pretrained`` code as any hub model, so the real loading path
is what gets exercised.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TinyModelConfig", "FIM_TOKENS", "build_tiny_model", "python_corpus"]

# Qwen2.5-Coder's fill-in-the-middle tokens: the tiny tokenizer carries them so that the FIM
# prompt path is the one tests exercise.
FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
EOS_TOKEN = "<|endoftext|>"


@dataclass(frozen=True)
class TinyModelConfig:
    vocab_size: int = 1024  # BPE vocabulary trained on the corpus (plus special tokens)
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2  # grouped-query attention, as in real code models
    max_position_embeddings: int = 2048
    fim: bool = True  # add the FIM special tokens to the tokenizer
    seed: int = 0
    corpus_files: int = 60  # stdlib files the tokenizer is trained on


def python_corpus(limit: int) -> list[str]:
    """Source text of up to ``limit`` standard-library modules (always present, PSF-licensed)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(stdlib.glob("*.py"))[: limit * 2]:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if len(texts) >= limit:
            break
    return texts


def build_tiny_model(path: str | Path, config: TinyModelConfig = TinyModelConfig()) -> Path:
    """Write a tokenizer and a random-weight ``LlamaForCausalLM`` to ``path``; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    special = [EOS_TOKEN, *(FIM_TOKENS if config.fim else ())]

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(python_corpus(config.corpus_files), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=list(special[1:]),
    )
    fast.save_pretrained(path)

    torch.manual_seed(config.seed)
    model_config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(model_config).save_pretrained(path)
    return path
