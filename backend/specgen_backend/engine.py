"""One loaded model ready for completion: its prompt format, its end tokens, and the per-row
decoding state and sampling that the scheduler (``scheduler.py``) drives step by step."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

from .loading import LoadedModel
from .prompt import Prompt, build_prompt, detect_fim, find_stop, partial_stop_length
from .protocol import Generate

__all__ = ["EngineConfig", "Engine"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class EngineConfig:
    max_prompt_tokens: int = 1536  # notebook context kept around the cursor
    max_new_tokens: int = 128  # hard ceiling on what a request may ask for
    max_candidates: int = 8  # hard ceiling on n


class Engine:
    """Generation over one loaded model."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig = EngineConfig()):
        self.loaded = loaded
        self.config = config
        tokenizer = loaded.tokenizer
        self.fim = detect_fim(tokenizer.get_vocab())
        self.eos_ids = _end_token_ids(loaded)
        # The prompt and the new tokens must fit the positions the model was trained on.
        context = getattr(loaded.model.config, "max_position_embeddings", None) or 1 << 30
        self.max_prompt_tokens = max(16, min(config.max_prompt_tokens, context - config.max_new_tokens))

    def prompt_for(self, request: Generate) -> Prompt:
        tokenizer = self.loaded.tokenizer
        return build_prompt(
            request.context,
            fim=self.fim,
            count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
            max_prompt_tokens=self.max_prompt_tokens,
            extra_stops=request.stop,
        )


@dataclass
class _Row:
    """The state of one candidate while it is being decoded."""

    stops: tuple[str, ...]
    ids: list = None  # type: ignore[assignment]
    text: str = ""
    emitted: int = 0  # characters of ``text`` already streamed
    logprob: float = 0.0
    done: bool = False
    reason: str = "length"

    def __post_init__(self):
        self.ids = []

    def check_stop(self) -> None:
        cut = find_stop(self.text, self.stops)
        if cut >= 0:
            self.text = self.text[:cut]
            self.finish("stop")

    def finish(self, reason: str) -> None:
        if not self.done:
            self.done, self.reason = True, reason

    def streamable_delta(self) -> str:
        """New text that can be shown: not a possible start of a stop string, nor half a
        UTF-8 character (the tokenizer decodes those as U+FFFD until the rest arrives)."""
        end = len(self.text)
        if not self.done:
            end -= partial_stop_length(self.text, self.stops)
            while end > self.emitted and self.text[end - 1] == "\ufffd":
                end -= 1
        if end <= self.emitted:
            return ""
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta


def _sample(logits, temperature: float, generator):
    """Greedy when temperature is 0, else softmax sampling. Returns (tokens, their logprobs)."""
    import torch

    logp = torch.log_softmax(logits, dim=-1)  # (n, V)
    if temperature <= 0:
        tokens = logp.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / temperature, dim=-1).cpu()
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)
    return tokens, logp.gather(1, tokens.view(-1, 1)).squeeze(1)


def _end_token_ids(loaded: LoadedModel) -> set[int]:
    """Token ids that end a completion: EOS and the FIM/file markers some code models emit."""
    tokenizer, config = loaded.tokenizer, loaded.model.generation_config
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    vocab = tokenizer.get_vocab()
    for marker in ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<EOT>"):
        if marker in vocab:
            ids.add(vocab[marker])
    return ids


def _seed(request: Generate) -> int:
    # Reproducible for a given user and request id (str hashes are salted per process; crc32 is not).
    return zlib.crc32(f"{request.user}\0{request.id}".encode()) if request.temperature > 0 else 0

