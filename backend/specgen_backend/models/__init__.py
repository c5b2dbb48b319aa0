"""The models shipped inside the package: ``specgen-tiny-code``, the offline default.

The weights folder next to this module is package data, not a module: a small Llama-architecture
code LM trained from scratch by ``tools/train_default_model.py`` on permissively licensed Python
(see its ``MANIFEST.json``). The engine loads it with the ordinary ``from_pretrained`` when no
other model is configured, so completion works on a fresh machine with no network.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL_NAME", "DEFAULT_MODEL_PATH", "default_model_path"]

DEFAULT_MODEL_NAME = "specgen-tiny-code"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / DEFAULT_MODEL_NAME

# What ``from_pretrained`` needs; a folder missing any of them (a source checkout without the
# weights, a stripped install) is treated as absent rather than failing deep inside transformers.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def default_model_path() -> Path | None:
    """The shipped model's folder, or ``None`` if its weights are not installed."""
    if all((DEFAULT_MODEL_PATH / name).is_file() for name in _REQUIRED):
        return DEFAULT_MODEL_PATH
    return None
