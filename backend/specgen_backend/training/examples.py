"""Training examples as the Jupyter side writes them, and the prompt each one becomes.

The prompt is rendered by the serving code (``specgen_backend.prompt.build_prompt`` on a
``CompletionContext``), so an adapter is trained on exactly the text it will see at completion
time: previous cells with ``# In[ ]:`` separators, the spec comment block as the preamble, the
start of the cell as the prefix; the target is what follows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..prompt import FimFormat, build_prompt
from ..protocol import Cell, CompletionContext

__all__ = ["TrainingExample", "load_examples", "to_context", "render"]


@dataclass(frozen=True)
class TrainingExample:
    notebook: str
    cells_before: list = field(default_factory=list)  # [{cell_type, source}]
    intent: str = ""
    spec: str = ""
    prefix: str = ""
    target: str = ""
    origin: str = "notebook"
    cell_index: int = -1

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingExample":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if not isinstance(known.get("target"), str) or not isinstance(known.get("notebook"), str):
            raise ValueError(f"an example needs string fields 'notebook' and 'target'; got keys {sorted(data)}")
        return cls(**known)


def load_examples(path: str | Path) -> list[TrainingExample]:
    """Read a JSON-lines file; a bad line is an error naming its line number."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(TrainingExample.from_dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
    return out


def to_context(example: TrainingExample) -> CompletionContext:
    cells = [Cell(cell_type=c.get("cell_type", "code"), source=c.get("source", "")) for c in example.cells_before]
    cells.append(Cell(cell_type="code", source=example.prefix))
    return CompletionContext(prefix=example.prefix, cells=cells, active=len(cells) - 1, preamble=example.spec)


def render(example: TrainingExample, *, fim: Optional[FimFormat], count_tokens: Callable[[str], int],
           max_prompt_tokens: int) -> tuple[str, tuple[str, ...]]:
    """(prompt text, stop strings) for ``example``, as the engine would build them."""
    prompt = build_prompt(to_context(example), fim=fim, count_tokens=count_tokens, max_prompt_tokens=max_prompt_tokens)
    return prompt.text, prompt.stops
