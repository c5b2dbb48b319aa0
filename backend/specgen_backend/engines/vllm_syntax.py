"""The native engine's syntax masks inside vLLM, as a vLLM logits processor.

Loaded by ``vllm serve --logits-processors specgen_backend.engines.vllm_syntax:SyntaxLogitsProcessor``
(``VllmServer`` passes it, and puts this package, alone, on vLLM's path). A request that carries
the extra argument ``specgen_syntax`` (``vllm_xargs`` of ``/v1/completions``: the active cell's
text before the cursor, as ``constraint.scanned_prefix`` cuts it) has each of its sequences held
to the very rules the native engine holds a row to (``constraint.RowGuide`` without heads): no
bracket that closes nothing, no second dot in a number, no run of operators, no second ``=`` in
a statement that assigns, no comment where an expression is open. Requests without it, and
every request on a vLLM started without this processor, decode as vLLM would.

The heads (``Constraint``) stay with vLLM's structured outputs (``vllm_structured``), which mask
the logits before any logits processor runs: where the syntax rules would leave a sequence no
token the regex allows, this processor leaves the logits as they came, so the constraint wins, as
it does in the native engine.

This module runs in vLLM's process and virtual environment (its own transformers): it imports
only what ``constraint`` needs (torch, the tokenizer), never the backend's server.
"""

from __future__ import annotations

import threading
from typing import Optional

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from ..constraint import RowGuide, TokenTable, decode_row, open_statement
from ..prompt import CodeScanner
from .vllm_client import SYNTAX_ARG

__all__ = ["SyntaxLogitsProcessor"]


class SyntaxLogitsProcessor(AdapterLogitsProcessor):
    """One ``_Sequence`` per vLLM request (each of ``n`` samples is a request of its own)."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        self._model_config = vllm_config.model_config
        self._lock = threading.Lock()
        self._tokenizer = None
        self._tables: dict[int, TokenTable] = {}

    @classmethod
    def validate_params(cls, params) -> None:
        prefix = (params.extra_args or {}).get(SYNTAX_ARG)
        if prefix is not None and not isinstance(prefix, str):
            raise ValueError(f"{SYNTAX_ARG} must be the text before the cursor (a string), not {type(prefix).__name__}")

    def is_argmax_invariant(self) -> bool:
        return False  # it refuses tokens: greedy decoding changes too

    def new_req_logits_processor(self, params) -> Optional["_Sequence"]:
        prefix = (params.extra_args or {}).get(SYNTAX_ARG)
        return None if prefix is None else _Sequence(self, prefix)

    def table(self, size: int) -> TokenTable:
        """The model's ``TokenTable`` for logits of width ``size`` (built at the first request)."""
        with self._lock:
            if size not in self._tables:
                self._tables[size] = TokenTable.from_tokenizer(self.tokenizer(), size)
            return self._tables[size]

    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            c = self._model_config
            self._tokenizer = AutoTokenizer.from_pretrained(c.tokenizer, revision=c.tokenizer_revision,
                                                            trust_remote_code=c.trust_remote_code)  # fmt: skip
        return self._tokenizer


class _Sequence:
    """One sequence's guide: what it has generated read by the scanner the text before the cursor set."""

    def __init__(self, owner: SyntaxLogitsProcessor, prefix: str):
        scanner = CodeScanner()
        scanner.feed(prefix)
        self.owner = owner
        self.guide = RowGuide(scanner, statement=False, heads=None, open_statement=open_statement(scanner, prefix))

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        table = self.owner.table(logits.shape[-1])
        # The text so far, decoded as the native engine decodes a row (the scanner reads only what
        # it has not read; a re-decoded text is read again from the start).
        self.guide.statement_end(decode_row(self.owner.tokenizer(), table.texts, output_ids))
        rule = self.guide.rule(table)
        if rule is None:
            return logits
        masked = logits.clone()
        rule.apply(masked)
        if torch.isneginf(masked.max()):
            return logits  # the rules refuse all that is left (the regex's head): the constraint wins
        return masked
