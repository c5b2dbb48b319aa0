"""Training tests: the personalization fixtures (``tests/personal_data.py``, registered in
``tests/conftest.py``)."""

from __future__ import annotations

from ...personal_data import generic_examples, idiom_rate, write_notebooks  # noqa: F401  (test modules import them from here)
