"""Training tests: the personalization fixtures (``tests/personal_data.py``, registered in
``tests/conftest.py``) and one torch thread."""

from __future__ import annotations

import pytest

from ...personal_data import generic_examples, idiom_rate, write_notebooks  # noqa: F401  (test modules import them from here)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Two CPU cores shared with other jobs: more threads than free cores makes torch spin, not run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
