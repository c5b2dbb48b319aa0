"""Fixtures shared by the whole suite: a tiny model built on the spot, Jupyter server fixtures."""

from __future__ import annotations

import pytest

# The personalization fixtures, session-scoped and shared by the backend and Jupyter tests.
from .personal_data import alice_dataset, alice_examples, alice_root, pandas_base, tiny_base  # noqa: F401

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A random-weight Llama and a BPE tokenizer with FIM tokens, saved as a local model folder."""
    from specgen_backend.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
