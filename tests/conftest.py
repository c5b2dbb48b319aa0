"""Fixtures shared by the whole suite: a tiny model built on the spot, Jupyter server fixtures."""

from __future__ import annotations

import pytest

# The personalization fixtures, session-scoped and shared by the backend and Jupyter tests.
from .personal_data import alice_dataset, alice_examples, alice_root, pandas_base, tiny_base  # noqa: F401

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread in the test process: its servers' children (backend, kernels, training
    jobs) compute beside it on two cores, and more threads than free cores make torch spin, not run
    (a training step of the tiny model: 0.6 s with one thread, 10-20 s with two on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A random-weight Llama and a BPE tokenizer with FIM tokens, saved as a local model folder."""
    from specgen_backend.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
